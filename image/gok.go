package image

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// gokMilestones are the lines of gok's output shown without Verbose: enough
// to see the build move, not the page of advice gok prints for hobbyists.
var gokMilestones = []string{
	"Building ",
	"Including loadable kernel modules",
	"Creating boot file system",
	"EEPROM update summary",
	"Creating root file system",
	"Build complete!",
}

// runGok runs gok in a child process (it changes directory and exits on
// errors, so it does not belong in ours), keeps its whole output in logPath
// and shows milestones, or everything with Verbose. On failure the error
// carries gok's last lines.
func runGok(ctx context.Context, o Options, args []string, logPath string) error {
	argv := o.GokCommand
	if len(argv) == 0 {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding the outpost executable to run gok: %w", err)
		}
		argv = []string{self, "gok"}
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, argv[0], append(argv[1:], args...)...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var tail []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if tail = append(tail, line); len(tail) > 25 {
				tail = tail[1:]
			}
			msg := stripLogPrefix(line)
			if o.Verbose || isMilestone(msg) {
				fmt.Fprintf(o.Progress, "      %s\n", msg)
			}
		}
		io.Copy(io.Discard, pr)
	}()
	err = cmd.Run()
	pw.Close()
	wg.Wait()
	if err != nil {
		return fmt.Errorf("gok %s: %w; its last lines:\n%s", strings.Join(args, " "), err, strings.Join(tail, "\n"))
	}
	return nil
}

func isMilestone(msg string) bool {
	for _, m := range gokMilestones {
		if strings.HasPrefix(msg, m) {
			return true
		}
	}
	return false
}

// stripLogPrefix drops the "2006/01/02 15:04:05 " that gok's logger adds.
func stripLogPrefix(line string) string {
	if len(line) > 20 && line[4] == '/' && line[7] == '/' && line[13] == ':' && line[19] == ' ' {
		return line[20:]
	}
	return line
}
