// Package browsertest drives Debian's headless Chromium through chromedp
// for the fleet console's tests. Chromium may reach loopback only.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Browser is one headless Chromium with one tab.
type Browser struct {
	t     *testing.T
	Ctx   context.Context
	shots string
}

// Start launches Chromium (the test fails if it is not installed:
// deploy/scripts/deps.sh apt installs it); every action after it shares
// timeout. OUTPOST_CONSOLE_SCREENSHOTS names a directory for Shot.
func Start(t *testing.T, timeout time.Duration) *Browser {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (deploy/scripts/deps.sh apt installs it): %v", err)
	}
	alloc, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("proxy-server", "direct://"), chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 1000))
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // starts the browser: no timeout on this one
		t.Fatalf("start chromium: %v", err)
	}
	ctx, cancel = context.WithTimeout(ctx, timeout)
	t.Cleanup(cancel)
	return &Browser{t: t, Ctx: ctx, shots: os.Getenv("OUTPOST_CONSOLE_SCREENSHOTS")}
}

// Run runs actions, failing the test with the page's address and text.
func (b *Browser) Run(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.Ctx, actions...); err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(b.Ctx), 5*time.Second)
		defer cancel()
		where, _ := chromedp.Run(dctx, chromedp.Location())
		body, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		b.t.Fatalf("%s: %v (page %s: %.800q)", what, err, where, body)
	}
}

// Text is the visible text of the first element sel matches.
func (b *Browser) Text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.Ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("read %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// Eval evaluates js (awaiting a promise) into T.
func Eval[T any](b *Browser, js string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.Ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// Confirm makes the page's confirm() dialogs answer yes.
func Confirm() chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](`(window.confirm = () => true, true)`)(ctx, tg)
		return err
	})
}

// Shot saves a full-page screenshot as console-<name>.png in the
// screenshot directory, if one is set.
func (b *Browser) Shot(name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if b.shots == "" {
			return nil
		}
		png, err := chromedp.FullScreenshot(100)(ctx, tg)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(b.shots, "console-"+name+".png"), png, 0o644)
	})
}

// WaitText reloads url until the text of sel contains want, up to
// within; it returns the last text.
func (b *Browser) WaitText(url, sel, want string, within time.Duration) string {
	b.t.Helper()
	var got string
	for end := time.Now().Add(within); ; time.Sleep(500 * time.Millisecond) {
		b.Run("open "+url, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(sel)))
		if got = b.Text(sel); strings.Contains(got, want) {
			return got
		}
		if time.Now().After(end) {
			b.t.Fatalf("%s %s: %q after %s, want it to contain %q", url, sel, got, within, fmt.Sprint(want))
		}
	}
}

// Until polls js in the page until it is true (a navigation in between
// is fine), failing the test with what after the browser's timeout.
func (b *Browser) Until(what, js string) {
	b.t.Helper()
	for {
		ok, err := chromedp.Run(b.Ctx, chromedp.Evaluate[bool](js))
		if err == nil && ok {
			return
		}
		if b.Ctx.Err() != nil {
			b.t.Fatalf("%s: %s never held", what, js)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
