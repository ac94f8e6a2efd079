package outbox

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// crashPayload is the payload of writer w's i-th Append in run r: a readable
// prefix plus filler of varying length, so any corruption or mix-up shows.
func crashPayload(r, w, i int) string {
	p := fmt.Sprintf("r%d.w%d.i%d.", r, w, i)
	return p + strings.Repeat(string(rune('a'+(r+w+i)%26)), (i*37+w*11)%500)
}

var crashStreams = []Stream{StreamTelemetry, StreamEvent, StreamAudit}

// TestCrashDurability SIGKILLs a child process that appends (6 writers) and
// acknowledges (1 acker on the event stream) at random moments, 25 times over
// the same data dir. The child prints "A stream seq r w i" only after Append
// returned, "k stream seq" before Ack and "K stream seq" after it returned;
// after every kill, each printed append must be present with its exact payload
// unless an Ack was started for it, each acknowledged one absent, every entry intact and in per-writer
// order, and the stats records must match the data.
func TestCrashDurability(t *testing.T) {
	if os.Getenv("OUTBOX_CHILD") == "1" {
		crashChild(t)
		return
	}
	if testing.Short() {
		t.Skip("spawns 25 processes")
	}
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("seed %d", seed)
	type key struct {
		s Stream
		q Seq
	}
	appended := map[key]string{}
	acked := map[key]bool{}  // Ack returned
	acking := map[key]bool{} // Ack called: the entry may be gone
	total := 0
	for run := range 25 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashDurability$")
		cmd.Env = append(os.Environ(), "OUTBOX_CHILD=1", "OUTBOX_DIR="+dir, "OUTBOX_RUN="+strconv.Itoa(run))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			defer close(lines)
			br := bufio.NewReader(out)
			for {
				l, err := br.ReadString('\n')
				if err != nil { // EOF; a line cut by the kill has no newline: ignore it
					return
				}
				lines <- strings.TrimSuffix(l, "\n")
			}
		}()
		var got []string
		select {
		case l := <-lines:
			if l != "ready" {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("run %d: child did not start: %q\n%s", run, l, stderr.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("run %d: child silent\n%s", run, stderr.String())
		}
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		if err := cmd.Process.Kill(); err != nil { // SIGKILL
			t.Fatal(err)
		}
		for l := range lines {
			got = append(got, l)
		}
		if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("run %d: child ended by itself (%v):\n%s\n%s", run, err, strings.Join(got, "\n"), stderr.String())
		}
		for _, l := range got {
			f := strings.Fields(l)
			var q uint64
			if len(f) >= 3 {
				q, err = strconv.ParseUint(f[2], 10, 64)
			}
			switch {
			case len(f) == 6 && f[0] == "A" && err == nil:
				r, _ := strconv.Atoi(f[3])
				w, _ := strconv.Atoi(f[4])
				i, _ := strconv.Atoi(f[5])
				appended[key{Stream(f[1]), Seq(q)}] = crashPayload(r, w, i)
				total++
			case len(f) == 3 && f[0] == "K" && err == nil:
				acked[key{Stream(f[1]), Seq(q)}] = true
			case len(f) == 3 && f[0] == "k" && err == nil:
				acking[key{Stream(f[1]), Seq(q)}] = true
			default:
				t.Fatalf("run %d: child said %q\n%s", run, l, stderr.String())
			}
		}

		o, closeStore := open(t, dir, Options{})
		checkConsistent(t, o)
		present := map[key]string{}
		for _, s := range crashStreams {
			last := map[[2]int]int{} // (run, writer) → last i
			for _, e := range all(t, o, s) {
				p := string(e.Payload)
				var r, w, i int
				if _, err := fmt.Sscanf(p, "r%d.w%d.i%d.", &r, &w, &i); err != nil || p != crashPayload(r, w, i) {
					t.Fatalf("run %d: %s/%d corrupt: %.60q", run, s, e.Seq, p)
				}
				if crashStreams[w%len(crashStreams)] != s {
					t.Fatalf("run %d: %s/%d holds writer %d's entry", run, s, e.Seq, w)
				}
				if l, ok := last[[2]int{r, w}]; ok && i <= l {
					t.Fatalf("run %d: %s/%d: r%d w%d entry %d after %d (duplicate or reordered)", run, s, e.Seq, r, w, i, l)
				}
				last[[2]int{r, w}] = i
				present[key{s, e.Seq}] = p
			}
		}
		for k, p := range appended {
			switch got, ok := present[k]; {
			case acked[k] && ok:
				t.Fatalf("run %d: %s/%d acknowledged but back after the crash", run, k.s, k.q)
			case ok && got != p, !ok && !acking[k]:
				t.Fatalf("run %d: %s/%d acknowledged-durable append lost or changed (present %v)", run, k.s, k.q, ok)
			}
		}
		for k := range acked {
			if _, ok := present[k]; ok {
				t.Fatalf("run %d: %s/%d acknowledged but back after the crash", run, k.s, k.q)
			}
		}
		closeStore()
	}
	t.Logf("%d durable appends, %d acks checked over 25 kills", total, len(acked))
	if total == 0 {
		t.Fatal("the child never got an append through")
	}
}

// crashChild appends and acknowledges until it is killed.
func crashChild(t *testing.T) {
	run, _ := strconv.Atoi(os.Getenv("OUTBOX_RUN"))
	o, _ := open(t, os.Getenv("OUTBOX_DIR"), Options{})
	var mu sync.Mutex
	say := func(format string, args ...any) { // one write(2) per line
		mu.Lock()
		defer mu.Unlock()
		io.WriteString(os.Stdout, fmt.Sprintf(format, args...)+"\n")
	}
	say("ready")
	fail := func(err error) { say("error %v", err); os.Exit(3) }
	for w := range 6 {
		go func() {
			s := crashStreams[w%len(crashStreams)]
			for i := 0; ; i++ {
				q, err := o.Append(ctx, s, []byte(crashPayload(run, w, i)))
				if err != nil {
					fail(err)
				}
				say("A %s %d %d %d %d", s, q, run, w, i)
			}
		}()
	}
	go func() { // acknowledges every other event, like a sender with PUBACKs
		var after Seq
		for {
			es, err := o.Next(StreamEvent, after, 20)
			if err != nil {
				fail(err)
			}
			if len(es) == 0 {
				<-o.Notify()
				continue
			}
			var seqs []Seq
			for _, e := range es {
				if after = e.Seq; e.Seq%2 == 0 {
					seqs = append(seqs, e.Seq)
				}
			}
			for _, q := range seqs {
				say("k %s %d", StreamEvent, q)
			}
			if err := o.Ack(ctx, StreamEvent, seqs...); err != nil {
				fail(err)
			}
			for _, q := range seqs {
				say("K %s %d", StreamEvent, q)
			}
		}
	}()
	time.Sleep(time.Minute)
	say("not killed")
}
