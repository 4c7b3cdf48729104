// Package browsertest runs browser end-to-end tests against a real headless
// Chromium (Debian package chromium), driven over the DevTools protocol by
// chromedp: a test opens the personal cloud's pages the way a person does,
// and the harness collects what a person would not see (console errors,
// uncaught exceptions) so the test can assert there were none.
//
// A test gets a fresh browser with New, which skips the test (fails it under
// CI=true) when Chromium is missing. The browser resolves no name except
// localhost and what the test maps with Options.HostRules, so a page cannot
// reach the internet by accident.
package browsertest

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/pc2/pc2/internal/testing/proc"
	"github.com/pc2/pc2/internal/testing/testenv"
)

// Options configures New. The zero value is usable.
type Options struct {
	// HostRules are Chromium host resolver rules tried before the default
	// one, which makes every other name except localhost fail to resolve.
	// For example "MAP *.pc2.test 127.0.0.1" lets the test reach a
	// gateway by name.
	HostRules []string
	// IgnoreCertErrors accepts any TLS certificate, for servers with a
	// self-signed or test-CA certificate.
	IgnoreCertErrors bool
	// Netns, if set, runs the browser in that network namespace (a
	// nattest host's NetnsPath: a user's device in a test topology);
	// chromedp talks to it over its DevTools pipe, which crosses
	// namespaces.
	Netns string
	// TrustKeys accepts a TLS certificate whose public key (or a CA
	// key in its chain) is one of these, and no other that the system
	// does not trust: a test that wants one server's own key, not merely
	// a valid certificate (SPKIHash makes the entries).
	TrustKeys []string
	// Timeout bounds the browser's whole life; 0 means 2 minutes (or the
	// test's deadline, if sooner).
	Timeout time.Duration
	// StepTimeout bounds each helper call, such as WaitVisible; 0 means
	// 30 seconds.
	StepTimeout time.Duration
}

// Browser is one headless Chromium with one tab, belonging to the test that
// created it: its helpers end that test with t.Fatal on error, so call them
// from the test's goroutine only.
type Browser struct {
	t           testing.TB
	ctx         context.Context
	stepTimeout time.Duration

	mu     sync.Mutex
	errs   []PageError
	closed bool // set in cleanup: stop logging to t
}

// PageError is a console error or an uncaught exception in a page.
type PageError struct {
	Kind  string // "exception", "console" or "log" (browser-side, e.g. a failed load)
	Text  string
	Where string // URL:line, if known
}

func (e PageError) String() string {
	if e.Where == "" {
		return e.Kind + ": " + e.Text
	}
	return e.Kind + ": " + e.Text + " (at " + e.Where + ")"
}

// chromiumNames are tried in order when PC2_CHROMIUM is unset.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome"}

func findChromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("PC2_CHROMIUM"); p != "" {
		path, err := exec.LookPath(p)
		if err != nil {
			t.Fatalf("PC2_CHROMIUM=%s: %v", p, err)
		}
		return path
	}
	for _, name := range chromiumNames {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	testenv.SkipOrFail(t, "no Chromium (%s) in PATH: apt-get install chromium, or scripts/deps.sh", strings.Join(chromiumNames, ", "))
	return ""
}

// New starts a headless Chromium for t, closed (and waited for) when t ends.
// If t fails, the page at that moment is saved as the screenshot
// "at-failure" and the browser's own output is logged.
func New(t testing.TB, opts Options) *Browser {
	t.Helper()
	exe := findChromium(t)

	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	if dt, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		// Leave time for the cleanup before go test's own timeout panics.
		if d, ok := dt.Deadline(); ok && time.Until(d)-10*time.Second < timeout {
			timeout = max(time.Until(d)-10*time.Second, time.Second)
		}
	}
	b := &Browser{t: t, stepTimeout: opts.StepTimeout}
	if b.stepTimeout == 0 {
		b.stepTimeout = 30 * time.Second
	}

	// Everything but localhost fails to resolve unless the test maps it:
	// no test depends on the network by accident, and none waits for DNS.
	rules := append(append([]string(nil), opts.HostRules...),
		"MAP * ~NOTFOUND", "EXCLUDE localhost", "EXCLUDE 127.0.0.1", "EXCLUDE [::1]")
	out := &proc.TailBuffer{Max: 16 << 10}
	aopts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		// Root in a container: no user namespace sandbox, a small /dev/shm
		// and no GPU.
		chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "chromium")),
		chromedp.WindowSize(1280, 900),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("host-resolver-rules", strings.Join(rules, ", ")),
		chromedp.CombinedOutput(out),
	)
	if opts.IgnoreCertErrors {
		aopts = append(aopts, chromedp.IgnoreCertErrors)
	}
	if len(opts.TrustKeys) > 0 {
		aopts = append(aopts, chromedp.Flag("ignore-certificate-errors-spki-list", strings.Join(opts.TrustKeys, ",")))
	}
	if opts.Netns != "" {
		aopts = append(aopts, inNetns(t, opts)...)
	}

	base, cancelBase := context.WithTimeout(context.Background(), timeout)
	actx, cancelAlloc := chromedp.NewExecAllocator(base, aopts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithErrorf(b.logf))
	b.ctx = ctx
	t.Cleanup(func() {
		if t.Failed() && ctx.Err() == nil {
			if p, err := b.screenshot("at-failure"); err != nil {
				t.Logf("browsertest: screenshot at failure: %v", err)
			} else {
				t.Logf("browsertest: screenshot at failure: %s", p)
			}
		}
		// Close gracefully so Chromium's helpers exit with it (the
		// user data dir is then free for t.TempDir's removal); the
		// cancels kill whatever is left, and cancelAlloc waits for the
		// process to exit.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := chromedp.Cancel(cctx); err != nil && ctx.Err() == nil {
			t.Logf("browsertest: close browser: %v", err)
		}
		cancel()
		cancelCtx()
		cancelAlloc()
		cancelBase()
		b.mu.Lock()
		b.closed = true
		b.mu.Unlock()
		if t.Failed() {
			t.Logf("browsertest: chromium output (last %d bytes):\n%s", out.Max, out.String())
		}
	})

	// The first action starts the browser and opens the tab; the
	// listener is in place before any page loads.
	start := time.Now()
	if err := chromedp.Listen(ctx, b.onEvent); err != nil {
		t.Fatalf("browsertest: start %s: %v\n%s", exe, err, out.String())
	}
	// The window's frame takes some of --window-size; make the page's
	// viewport 1280x900 itself, so layouts and screenshots match it.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("browsertest: set viewport: %v", err)
	}
	t.Logf("browsertest: started %s in %v", exe, time.Since(start).Round(time.Millisecond))
	return b
}

// inNetns is the allocator option that runs Chromium in opts.Netns: the
// command wrapped in nsenter (which execs it, keeping the DevTools pipe's
// file descriptors), killed with the test binary as chromedp's default
// would.
func inNetns(t testing.TB, opts Options) []chromedp.ExecAllocatorOption {
	t.Helper()
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		testenv.SkipOrFail(t, "browsertest: nsenter: %v", err)
	}
	return []chromedp.ExecAllocatorOption{chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
		cmd.Args = append([]string{nsenter, "--net=" + opts.Netns, "--"}, cmd.Args...)
		cmd.Path = nsenter
		cmd.SysProcAttr = proc.SysProcAttr()
	})}
}

// onEvent runs on chromedp's reader goroutine: it must be quick and must
// not call back into the browser.
func (b *Browser) onEvent(ev any) {
	var pe PageError
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		pe = PageError{Kind: "exception", Text: d.Text, Where: where(d.URL, d.LineNumber)}
		if d.Exception != nil && d.Exception.Description != "" {
			// The description is "Error: msg\n    at ..."; the stack
			// is noise in a test log.
			msg, _, _ := strings.Cut(d.Exception.Description, "\n")
			pe.Text += " " + msg
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError {
			return
		}
		var parts []string
		for _, a := range ev.Args {
			parts = append(parts, remoteString(a))
		}
		pe = PageError{Kind: "console", Text: strings.Join(parts, " ")}
		if st := ev.StackTrace; st != nil && len(st.CallFrames) > 0 {
			pe.Where = where(st.CallFrames[0].URL, st.CallFrames[0].LineNumber)
		}
	case *log.EventEntryAdded:
		// The browser asks for /favicon.ico on its own; a page that has
		// none is not broken.
		if ev.Entry.Level != log.EntryLevelError || strings.HasSuffix(ev.Entry.URL, "/favicon.ico") {
			return
		}
		pe = PageError{Kind: "log", Text: ev.Entry.Text, Where: where(ev.Entry.URL, ev.Entry.LineNumber)}
	default:
		return
	}
	b.mu.Lock()
	b.errs = append(b.errs, pe)
	b.mu.Unlock()
	b.logf("browsertest: page %s", pe)
}

// logf logs to the test from chromedp's goroutines, until the cleanup:
// logging after a test has ended panics.
func (b *Browser) logf(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.t.Logf(format, args...)
	}
}

// where formats a 0-based protocol line number as a 1-based location.
func where(url string, line int64) string {
	if url == "" {
		return ""
	}
	return fmt.Sprintf("%s:%d", url, line+1)
}

func remoteString(o *runtime.RemoteObject) string {
	if o.Type == runtime.RemoteObjectTypeString {
		var s string
		if json.Unmarshal(o.Value, &s) == nil {
			return s
		}
	}
	switch {
	case o.Description != "":
		return o.Description
	case len(o.Value) > 0:
		return string(o.Value)
	case o.UnserializableValue != "":
		return string(o.UnserializableValue)
	}
	return string(o.Type)
}

// Errors returns the console errors and uncaught exceptions seen so far.
// It first makes a round trip to the page, so everything the page reported
// before that is included.
func (b *Browser) Errors() []PageError {
	b.t.Helper()
	if b.ctx.Err() == nil {
		// chromedp hands events to the listener in the order they
		// arrive, before the reply to a later command.
		ctx, cancel := context.WithTimeout(b.ctx, b.stepTimeout)
		_, err := chromedp.Run(ctx, chromedp.Evaluate[int]("0"))
		cancel()
		if err != nil {
			b.t.Logf("browsertest: sync with page: %v", err)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]PageError(nil), b.errs...)
}

// CheckNoErrors marks the test failed for each console error or uncaught
// exception seen so far.
func (b *Browser) CheckNoErrors() {
	b.t.Helper()
	for _, e := range b.Errors() {
		b.t.Errorf("page error: %s", e)
	}
}

// Context is the tab's chromedp context, for actions the helpers do not
// cover: chromedp.Run(b.Context(), chromedp.Evaluate[int]("1+1")).
func (b *Browser) Context() context.Context { return b.ctx }

// run runs one step under the step timeout.
func run[T any](b *Browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, b.stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("browsertest: %s: %v", what, err)
	}
	return v
}

// Run runs chromedp actions under the step timeout.
func (b *Browser) Run(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	run(b, "run", chromedp.Steps(steps...))
}

// Navigate loads url and waits for the page's load event.
func (b *Browser) Navigate(url string) {
	b.t.Helper()
	run(b, "navigate to "+url, chromedp.Navigate(url))
}

// WaitVisible waits until the first element matching the CSS selector is
// visible.
func (b *Browser) WaitVisible(sel string) {
	b.t.Helper()
	run(b, fmt.Sprintf("wait for %q visible", sel), chromedp.WaitVisible(chromedp.CSS(sel)))
}

// Click clicks the first element matching the CSS selector, once visible.
func (b *Browser) Click(sel string) {
	b.t.Helper()
	run(b, fmt.Sprintf("click %q", sel), chromedp.Click(chromedp.CSS(sel)))
}

// Type types text into the first element matching the CSS selector, key by
// key, as a person would (so input handlers run).
func (b *Browser) Type(sel, text string) {
	b.t.Helper()
	run(b, fmt.Sprintf("type into %q", sel), chromedp.SendKeys(chromedp.CSS(sel), text))
}

// Text returns the visible text of the first element matching the CSS
// selector.
func (b *Browser) Text(sel string) string {
	b.t.Helper()
	return run(b, fmt.Sprintf("text of %q", sel), chromedp.Text(chromedp.CSS(sel)))
}

// URL returns the tab's current URL.
func (b *Browser) URL() string {
	b.t.Helper()
	return run(b, "location", chromedp.Location())
}

// SetFiles chooses local files in the <input type=file> matching the CSS
// selector, as the file dialog would.
func (b *Browser) SetFiles(sel string, paths ...string) {
	b.t.Helper()
	abs := make([]string, len(paths))
	for i, p := range paths {
		a, err := filepath.Abs(p)
		if err != nil {
			b.t.Fatalf("browsertest: set files: %v", err)
		}
		abs[i] = a
	}
	run(b, fmt.Sprintf("set files of %q", sel), chromedp.SetUploadFiles(chromedp.CSS(sel), abs))
}

// SPKIHash is the entry of Options.TrustKeys for a certificate's key:
// the base64 SHA-256 of its SubjectPublicKeyInfo.
func SPKIHash(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// Eval evaluates a JavaScript expression in the page, awaiting it if it
// is a promise, and returns its value as a string.
func (b *Browser) Eval(js string) string {
	b.t.Helper()
	return run(b, "evaluate", chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
}

// Fetch fetches url from within the page, with the page's cookies, and
// returns the status and body: for checking what an API tells the
// logged-in page.
func (b *Browser) Fetch(url string) (status int, body string) {
	b.t.Helper()
	u, _ := json.Marshal(url)
	type result struct {
		Status int    `json:"status"`
		Body   string `json:"body"`
	}
	r := run(b, "fetch "+url, chromedp.Evaluate[result](
		`(async () => { const r = await fetch(`+string(u)+`, {credentials: "include"}); return {status: r.status, body: await r.text()}; })()`,
		chromedp.EvalAwaitPromise))
	return r.Status, r.Body
}
