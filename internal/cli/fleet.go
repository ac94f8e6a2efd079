package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/audit"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/operator"
)

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// parseArgs parses flags that may come before or after n positional
// arguments.
func parseArgs(fs *flag.FlagSet, args []string, n int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != n {
		return nil, fmt.Errorf("%w: want %d argument(s), got %d", errUsage, n, len(pos))
	}
	return pos, nil
}

func fleetDirFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("OUTPOST_FLEET")
	if def == "" {
		def = "fleet"
	}
	return fs.String("dir", def, "fleet directory (env OUTPOST_FLEET)")
}

func runFleetInit(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fleet init", stderr)
	dir := fleetDirFlag(fs)
	name := fs.String("name", "", "fleet name")
	brokerURL := fs.String("broker-url", "", "what boxes dial: mqtts://host:8883 or wss://host:443/mqtt")
	var hosts, ntp listFlag
	fs.Var(&hosts, "broker-host", "name or address in the broker's certificate (repeatable; default: the URL's host)")
	fs.Var(&ntp, "ntp", "NTP server for the boxes (repeatable)")
	mqttPort := fs.Int("mosquitto-port", 8883, "boxes' port in the generated mosquitto.conf")
	opPort := fs.Int("operator-port", 0, "the operator's port in the generated mosquitto.conf, on 127.0.0.1 (default: mosquitto-port+1)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *name == "" || *brokerURL == "" {
		return fmt.Errorf("%w: --name and --broker-url are required", errUsage)
	}
	u, err := url.Parse(*brokerURL)
	if err != nil || u.Hostname() == "" {
		return fmt.Errorf("%w: --broker-url %q is not a URL with a host", errUsage, *brokerURL)
	}
	if len(hosts) == 0 {
		hosts = listFlag{u.Hostname()}
	}
	for _, h := range []string{"127.0.0.1", "localhost"} { // the operator listener
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	if *opPort == 0 {
		*opPort = *mqttPort + 1
	}
	f, err := fleet.Init(*dir, fleet.InitOptions{Name: *name, BrokerURL: *brokerURL, BrokerHosts: hosts, NTPServers: ntp})
	if err != nil {
		return err
	}
	conf, err := f.WriteMosquittoConfig(fleet.MosquittoOptions{Dir: f.Dir + "/mosquitto", Address: "0.0.0.0", Port: *mqttPort,
		OperatorAddress: "127.0.0.1", OperatorPort: *opPort})
	if err != nil {
		return err
	}
	if err := f.SetOperatorURL(fmt.Sprintf("mqtts://127.0.0.1:%d", *opPort)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, `fleet %q created in %s

  fleet file for images:  %s   (outpost image build --fleet %s ...)
  broker config:          %s   (mosquitto -c %s)
                          boxes on port %d, operator tools on 127.0.0.1:%d

Keep %s private: it holds the fleet CA and signing keys.
`, *name, f.Dir, f.FleetFilePath(), f.FleetFilePath(), conf, conf, *mqttPort, *opPort, f.Dir)
	return nil
}

// connectOperator opens the fleet and connects to its broker (the fleet
// file's unless overridden) as the operator.
func connectOperator(ctx context.Context, dir, brokerOverride string, o operator.Options) (*fleet.Fleet, *operator.Operator, error) {
	f, err := fleet.Open(dir)
	if err != nil {
		return nil, nil, err
	}
	raw := brokerOverride
	if raw == "" {
		raw = f.OperatorURL
	}
	if raw == "" {
		ff, err := config.LoadFleet(f.FleetFilePath())
		if err != nil {
			return nil, nil, err
		}
		raw = ff.BrokerURL
	}
	if o.BrokerURL, err = url.Parse(raw); err != nil {
		return nil, nil, fmt.Errorf("broker URL: %w", err)
	}
	op, err := operator.Connect(ctx, f, o)
	if err != nil {
		return nil, nil, err
	}
	return f, op, nil
}

func runFleetClaim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fleet claim", stderr)
	dir := fleetDirFlag(fs)
	broker := fs.String("broker", "", "broker URL (default: the fleet file's)")
	group := fs.String("group", "", "group to put the box in")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for the box's request")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	_, op, err := connectOperator(ctx, *dir, *broker, operator.Options{})
	if err != nil {
		return err
	}
	defer op.Close()
	dev, err := op.Claim(ctx, pos[0], *group, *wait)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "claimed %s (code %s): its certificate is on its way\n", dev, pos[0])
	return nil
}

func runFleetRevoke(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fleet revoke", stderr)
	dir := fleetDirFlag(fs)
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	if err := f.Revoke(pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "revoked %s; its certificates are on %s.\n", pos[0], f.CRLFile())
	mdir := filepath.Join(f.Dir, "mosquitto")
	if _, err := os.Stat(filepath.Join(mdir, fleet.MosquittoConf)); err != nil {
		return nil
	}
	signalled, err := f.ReloadMosquitto(mdir)
	if err != nil {
		return err
	}
	if signalled {
		fmt.Fprintln(stdout, "mosquitto reloaded (SIGHUP): the box is cut off now, and refused when it reconnects.")
	} else {
		fmt.Fprintf(stdout, "mosquitto is not running here: copy %s and %s to the broker and reload it (systemctl reload mosquitto).\n",
			f.CRLFile(), filepath.Join(mdir, "acl"))
	}
	return nil
}

func runFleetDevices(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fleet devices", stderr)
	dir := fleetDirFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	devs, err := f.Devices()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tCLAIM CODE\tGROUP\tCLAIMED\tSTATE")
	for _, d := range devs {
		state := "active"
		if d.Revoked != nil {
			state = "revoked " + d.Revoked.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.ID, d.ClaimCode, d.Group, d.Claimed.Format(time.RFC3339), state)
	}
	return tw.Flush()
}

func runFleetCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fleet command", stderr)
	dir := fleetDirFlag(fs)
	broker := fs.String("broker", "", "broker URL (default: the fleet file's)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the answer")
	pos, err := parseArgs(fs, args, 2)
	if err != nil {
		return err
	}
	_, op, err := connectOperator(ctx, *dir, *broker, operator.Options{})
	if err != nil {
		return err
	}
	defer op.Close()
	r, err := op.Command(ctx, pos[0], pos[1], nil, *timeout)
	if err != nil {
		return err
	}
	if !r.OK {
		return fmt.Errorf("%s refused %s: %s", pos[0], pos[1], r.Error)
	}
	fmt.Fprintf(stdout, "%s: ok %s\n", pos[0], wire.DescribeRaw(r.Result))
	return nil
}

// boxView is one row of `fleet watch`.
type boxView struct {
	online   bool
	version  string
	seen     time.Time
	metrics  map[string]float64
	alerts   []string
	lastKind string
	update   string // the last OTA progress, e.g. "v7 downloading 40%"
}

// otaState renders an "ota" event for the watch table's UPDATE column.
func otaState(ev wire.Event) string {
	s := "v" + ev.Attrs["version"] + " " + ev.Attrs["phase"]
	if p := ev.Attrs["percent"]; p != "" {
		s += " " + p + "%"
	}
	if r := ev.Attrs["reason"]; r != "" {
		if len(r) > 40 {
			r = r[:40] + "…"
		}
		s += " (" + r + ")"
	}
	return s
}

func runFleetWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fleet watch", stderr)
	dir := fleetDirFlag(fs)
	broker := fs.String("broker", "", "broker URL (default: the fleet file's)")
	every := fs.Duration("every", 2*time.Second, "refresh interval")
	once := fs.Duration("for", 0, "stop after this long (0: until Ctrl-C)")
	if err := parse(fs, args); err != nil {
		return err
	}
	_, op, err := connectOperator(ctx, *dir, *broker, operator.Options{})
	if err != nil {
		return err
	}
	defer op.Close()
	var mu sync.Mutex
	boxes := map[string]*boxView{}
	op.Subscribe(func(m operator.Message) {
		mu.Lock()
		defer mu.Unlock()
		b := boxes[m.Device]
		if b == nil {
			b = &boxView{metrics: map[string]float64{}}
			boxes[m.Device] = b
		}
		b.seen = m.Env.Time
		switch m.Stream {
		case "status", "event":
			var ev wire.Event
			if wire.DecodeBody(m.Env, &ev, wire.DefaultLimits()) == nil {
				switch ev.Kind {
				case "online":
					b.online = true
				case "offline":
					b.online = false
				case "ota":
					b.update = otaState(ev)
				}
				if ev.Severity != wire.SeverityInfo {
					b.alerts = append(b.alerts, ev.Kind)
				}
				b.lastKind = ev.Kind
			}
		case "telemetry":
			var t wire.Telemetry
			if wire.DecodeBody(m.Env, &t, wire.DefaultLimits()) == nil {
				b.online = true
				b.metrics = t.Metrics
				b.version = t.Labels["version"]
			}
		}
	})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if *once > 0 {
		ctx, cancel = context.WithTimeout(ctx, *once)
		defer cancel()
	}
	t := time.NewTicker(*every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		mu.Lock()
		ids := make([]string, 0, len(boxes))
		for id := range boxes {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "\n%s\nDEVICE\tONLINE\tVERSION\tUPTIME\tLOAD\tPERM FREE\tOUTBOX\tRTT\tUPDATE\tLAST SEEN\tALERTS\n", time.Now().Format(time.TimeOnly))
		for _, id := range ids {
			b := boxes[id]
			m := b.metrics
			free := "-"
			if m["perm_total_bytes"] > 0 {
				free = fmt.Sprintf("%.0f%%", 100*m["perm_avail_bytes"]/m["perm_total_bytes"])
			}
			update := b.update
			if update == "" {
				update = "-"
			}
			fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%.2f\t%s\t%.0f\t%.0fms\t%s\t%s\t%s\n", id, b.online, b.version,
				time.Duration(m["uptime_s"])*time.Second, m["load1"], free, m["outbox_depth"], m["link_rtt_ms"], update,
				b.seen.Format(time.TimeOnly), strings.Join(b.alerts, ","))
		}
		tw.Flush()
		mu.Unlock()
	}
}

func runFleetEvents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fleet events", stderr)
	dir := fleetDirFlag(fs)
	broker := fs.String("broker", "", "broker URL (default: the fleet file's)")
	dur := fs.Duration("for", 0, "stop after this long (0: until Ctrl-C)")
	if err := parse(fs, args); err != nil {
		return err
	}
	_, op, err := connectOperator(ctx, *dir, *broker, operator.Options{})
	if err != nil {
		return err
	}
	defer op.Close()
	var mu sync.Mutex
	op.Subscribe(func(m operator.Message) {
		if m.Stream == "telemetry" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stdout, "%s %s %s %s\n", m.Env.Time.Format(time.RFC3339), m.Device, m.Stream, wire.Describe(m.Env))
	})
	if *dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *dur)
		defer cancel()
	}
	<-ctx.Done()
	return nil
}

// runFleetServe is the fleet's long-running service: it answers boxes'
// certificate renewals and logs what they report. It keeps a persistent
// session, so nothing sent while it was down is lost.
func runFleetServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fleet serve", stderr)
	dir := fleetDirFlag(fs)
	broker := fs.String("broker", "", "broker URL (default: the fleet file's)")
	if err := parse(fs, args); err != nil {
		return err
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	onMessage := func(m operator.Message) {
		if m.Stream == "telemetry" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if m.Stream == "audit" {
			var a wire.Audit
			if err := wire.DecodeBody(m.Env, &a, wire.DefaultLimits()); err == nil {
				if err := f.AppendAudit(m.Device, audit.Entry{Seq: a.Seq, Time: m.Env.Time, Prev: a.Prev, Hash: a.Hash,
					Actor: a.Actor, Action: a.Action, Target: a.Target, Source: a.Source, Result: a.Result}); err != nil {
					fmt.Fprintf(stderr, "keeping audit entry %d of %s: %v\n", a.Seq, m.Device, err)
				}
			}
		}
		fmt.Fprintf(stdout, "%s %s %s %s\n", m.Env.Time.Format(time.RFC3339), m.Device, m.Stream, wire.Describe(m.Env))
	}
	_, op, err := connectOperator(ctx, *dir, *broker, operator.Options{
		ClientID: "outpost-fleet-serve", Persistent: true, ServeRenewals: true, OnMessage: onMessage,
	})
	if err != nil {
		return err
	}
	defer op.Close()
	fmt.Fprintf(stdout, "serving fleet %s (renewals; events below). Ctrl-C stops.\n", f.Name)
	<-ctx.Done()
	return nil
}
