package daemon

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outpost-gw/outpost/internal/testutil/tools"
	"github.com/outpost-gw/outpost/internal/tokens"
)

// TestLANUpdateOfferInChromium: the LAN page's "Install an update from
// files" form, in headless Chromium: hidden for a viewer without admin;
// for an admin it sends the two files (multipart, same origin, session
// cookie), shows the box's refusal of a manifest expired by the trusted
// clock, then the acceptance of a good one, which the fake target installs.
func TestLANUpdateOfferInChromium(t *testing.T) {
	tools.Need(t, "chromium")
	b := newOfferBox(t)
	dir := t.TempDir()
	file := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keys, stale, good := file("keys.json", b.keysDoc), file("stale.json", b.stale), file("manifest.json", b.good)

	path, _ := exec.LookPath("chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("ignore-certificate-errors", true), // the box's self-signed LAN certificate
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	defer func() { cancelC(); cancelA() }()
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	defer cancelT()

	signIn := func(tok string) {
		t.Helper()
		if err := chromedp.Do(ctx,
			chromedp.WaitVisible(chromedp.CSS("#signin-form")),
			chromedp.SetValue(chromedp.CSS("#token"), tok),
			chromedp.Click(chromedp.CSS("#signin-form button")),
			chromedp.WaitVisible(chromedp.CSS("#signout")),
		); err != nil {
			t.Fatalf("sign in: %v", err)
		}
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(b.base+"/")); err != nil {
		t.Fatal(err)
	}
	signIn(b.mint(tokens.ActionLive))
	if hidden, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector('#update-offer').hidden`)); err != nil || !hidden {
		t.Errorf("update form shown to a viewer without admin (hidden %v, %v)", hidden, err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#signout"))); err != nil {
		t.Fatal(err)
	}
	signIn(b.mint(tokens.ActionAdmin))

	offer := func(manifest, want string) {
		t.Helper()
		err := chromedp.Do(ctx,
			chromedp.WaitVisible(chromedp.CSS("#offer-form")),
			chromedp.SetUploadFiles(chromedp.CSS("#offer-keys"), []string{keys}),
			chromedp.SetUploadFiles(chromedp.CSS("#offer-manifest"), []string{manifest}),
			chromedp.Click(chromedp.CSS("#offer-form button")),
		)
		if err == nil {
			_, err = chromedp.Run(ctx, chromedp.Poll[bool](`(() => { const p = document.querySelector('#offer-result'); return !p.hidden && p.textContent.includes(`+jsString(want)+`); })()`, chromedp.WithPollingTimeout(15*time.Second)))
		}
		got, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#offer-result').textContent`))
		if err != nil {
			t.Fatalf("offer %s: want %q on the page, got %q (%v)", filepath.Base(manifest), want, got, err)
		}
		t.Logf("page says: %s", got)
	}
	offer(stale, "document expired")
	if calls := fakeCalls(b.fake); len(calls) != 0 {
		t.Fatalf("refused offer reached the target: %v", calls)
	}
	offer(good, "accepted: installing v2")
	waitCalls(t, b.fake, "reboot")
	if got, _ := os.ReadFile(b.fake.Path); !bytes.Equal(got, b.img) {
		t.Fatalf("the slot holds %d bytes, not the image", len(got))
	}
}

func jsString(s string) string { return "'" + strings.ReplaceAll(s, "'", `\'`) + "'" }
