package wifi

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// All Run tests use testing/synctest: time is virtual and advances only
// when every goroutine of the test is blocked, so the timings below are
// exact, not lucky.

var wpa2 = Config{SSID: testSSID, Passphrase: testPass}

func testPMK(t testing.TB) string {
	t.Helper()
	pmk, err := wpa2.PMK()
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(pmk)
}

// sinceStart converts times to offsets from start, for messages.
func sinceStart(start time.Time, ts []time.Time) []time.Duration {
	var out []time.Duration
	for _, t := range ts {
		out = append(out, t.Sub(start))
	}
	return out
}

func secs(s ...float64) []time.Duration {
	var out []time.Duration
	for _, v := range s {
		out = append(out, time.Duration(v*float64(time.Second)))
	}
	return out
}

func wantCalls(t *testing.T, f *fakeRadio, want ...string) {
	t.Helper()
	if got := f.callList(); !slices.Equal(got, want) {
		t.Errorf("radio calls:\ngot  %q\nwant %q", got, want)
	}
}

func wantConnects(t *testing.T, r *run, want []time.Duration) {
	t.Helper()
	if got := sinceStart(r.start, r.radio.connectTimes()); !slices.Equal(got, want) {
		t.Errorf("Connect at:\ngot  %v\nwant %v", got, want)
	}
}

func wantLogs(t *testing.T, r *run, prefix string, n int) []string {
	t.Helper()
	got := r.logs.matching(prefix)
	if len(got) != n {
		t.Errorf("log lines %q: got %d, want %d:\n%s", prefix, len(got), n, strings.Join(got, "\n"))
	}
	return got
}

func wantNoSecret(t *testing.T, r *run, secret string) {
	t.Helper()
	if all := r.logs.all(); strings.Contains(all, secret) {
		t.Errorf("the passphrase is in the log:\n%s", all)
	}
	if st := fmt.Sprintf("%+v", r.state.Status()); strings.Contains(st, secret) {
		t.Errorf("the passphrase is in the status: %s", st)
	}
}

func TestJoinWPA2(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		r := startRun(t, wpa2, f, nil)

		r.at(2 * time.Second)
		if st := r.wantPhase(PhaseConnecting); st.Interface != "wlan0" || st.SSID != testSSID {
			t.Errorf("while connecting: got %+v, want interface wlan0, ssid %q", st, testSSID)
		}
		r.at(3 * time.Second)
		st := r.wantPhase(PhaseConnected)
		want := Status{Phase: PhaseConnected, Interface: "wlan0", SSID: testSSID, BSSID: testBSSID.String(), FrequencyMHz: 5180, SignalDBm: -52, Since: r.start.Add(3 * time.Second)}
		if st != want {
			t.Errorf("status:\ngot  %+v\nwant %+v", st, want)
		}
		wantCalls(t, f, "up wlan0", fmt.Sprintf(`connect wlan0#3 "home" pmk=%s`, testPMK(t)))
		wantLogs(t, r, "INFO wifi: connected", 1)

		// Polling while connected changes nothing.
		r.at(time.Hour)
		r.wantPhase(PhaseConnected)
		wantConnects(t, r, secs(0))
		wantLogs(t, r, "ERROR", 0)
		wantLogs(t, r, "WARN", 0)
		wantNoSecret(t, r, testPass)

		r.stop()
		r.wantPhase(PhaseStopped)
		if !f.closed {
			t.Error("radio not closed")
		}
		// The association stays up for a restarted Run to adopt.
		wantCalls(t, f, "up wlan0", fmt.Sprintf(`connect wlan0#3 "home" pmk=%s`, testPMK(t)))
	})
}

func TestJoinOpenAndHexPSK(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     func(t *testing.T) Config
		open    bool
		wantKey string
	}{
		{"open", func(*testing.T) Config { return Config{SSID: testSSID} }, true, "none"},
		{"hex psk", func(t *testing.T) Config {
			return Config{SSID: testSSID, Passphrase: strings.ToUpper(testPMK(t))}
		}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFake(t)
				key := tc.wantKey
				if tc.open {
					f.wantPMK, f.ap.Security = nil, SecurityOpen
				} else {
					key = testPMK(t)
				}
				r := startRun(t, tc.cfg(t), f, nil)
				r.at(3 * time.Second)
				r.wantPhase(PhaseConnected)
				wantCalls(t, f, "up wlan0", fmt.Sprintf(`connect wlan0#3 "home" pmk=%s`, key))
			})
		})
	}
}

func TestWrongPassphraseBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		r := startRun(t, Config{SSID: testSSID, Passphrase: "not the passphrase"}, f, nil)

		r.at(20500 * time.Millisecond)
		st := r.wantPhase(PhaseRetrying)
		if st.Failures != 1 || st.NextAttempt != r.start.Add(21*time.Second) || st.LastErrorAt != r.start.Add(20*time.Second) {
			t.Errorf("after one attempt: got %+v, want 1 failure at 20s, next attempt at 21s", st)
		}
		for _, want := range []string{ErrRejected.Error(), `"home" (wpa2-psk, -52 dBm)`, "wrong passphrase?"} {
			if !strings.Contains(st.LastError, want) {
				t.Errorf("last error %q does not contain %q", st.LastError, want)
			}
		}
		// The attempt is abandoned before the scan that explains it.
		wantCalls(t, f, "up wlan0", `connect wlan0#3 "home" pmk=`+hexPMK(t, "not the passphrase"), "disconnect wlan0", "scan wlan0")

		// 20 s per attempt, then 1, 2, 4 ... 60 s.
		r.at(10 * time.Minute)
		wantConnects(t, r, secs(0, 21, 43, 67, 95, 131, 183, 263, 343, 423, 503, 583))
		lines := wantLogs(t, r, "ERROR wifi: could not join network", 11)
		if len(lines) > 0 && !strings.Contains(lines[0], "wrong passphrase?") {
			t.Errorf("log line does not say why: %s", lines[0])
		}
		if st := r.state.Status(); st.Failures != 11 {
			t.Errorf("failures: got %d, want 11", st.Failures)
		}
		wantNoSecret(t, r, "not the passphrase")
	})
}

func hexPMK(t testing.TB, pass string) string {
	t.Helper()
	pmk, err := Config{SSID: testSSID, Passphrase: pass}.PMK()
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(pmk)
}

func TestNetworkNotFoundThenAppears(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		f.inRange = false
		r := startRun(t, wpa2, f, nil)

		r.at(20500 * time.Millisecond)
		st := r.wantPhase(PhaseRetrying)
		for _, want := range []string{ErrNotFound.Error(), `"home" is not among the 1 networks`} {
			if !strings.Contains(st.LastError, want) {
				t.Errorf("last error %q does not contain %q", st.LastError, want)
			}
		}
		f.do(func(f *fakeRadio) { f.inRange = true })
		r.at(24 * time.Second)
		st = r.wantPhase(PhaseConnected)
		if st.LastError != "" || st.Failures != 1 {
			t.Errorf("after joining: got %+v, want no error and 1 failure before", st)
		}
		wantConnects(t, r, secs(0, 21))
	})
}

func TestDiagnosis(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		setup func(f *fakeRadio)
		want  []string
	}{
		{"wpa3 only", wpa2, func(f *fakeRadio) { f.ap.Security, f.wantPMK = SecuritySAE, []byte("refuses") },
			[]string{ErrUnsupported.Error(), "WPA3-only"}},
		{"enterprise", wpa2, func(f *fakeRadio) { f.ap.Security, f.wantPMK = SecurityEnterprise, []byte("refuses") },
			[]string{ErrUnsupported.Error(), "802.1X"}},
		{"tkip", wpa2, func(f *fakeRadio) { f.ap.Security, f.wantPMK = SecurityTKIP, []byte("refuses") },
			[]string{ErrUnsupported.Error(), "TKIP"}},
		{"unknown security", wpa2, func(f *fakeRadio) { f.ap.Security, f.wantPMK = SecurityOther, []byte("refuses") },
			[]string{ErrUnsupported.Error(), "does not know"}},
		{"passphrase missing", Config{SSID: testSSID}, nil,
			[]string{ErrRejected.Error(), "needs a passphrase"}},
		{"network is open", wpa2, func(f *fakeRadio) { f.ap.Security, f.wantPMK = SecurityOpen, nil },
			[]string{ErrRejected.Error(), "leave the passphrase empty"}},
		{"open network refuses", Config{SSID: testSSID}, func(f *fakeRadio) { f.ap.Security, f.wantPMK = SecurityOpen, []byte("mac filter") },
			[]string{ErrRejected.Error(), "did not let us join within 20s"}},
		{"scan fails", wpa2, func(f *fakeRadio) { f.wantPMK, f.scanErr = nil, syscall.EBUSY },
			[]string{`not connected to "home" within 20s, and a scan to find out why failed: device or resource busy`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFake(t)
				if tc.setup != nil {
					tc.setup(f)
				}
				r := startRun(t, tc.cfg, f, nil)
				r.at(20500 * time.Millisecond)
				st := r.wantPhase(PhaseRetrying)
				for _, w := range tc.want {
					if !strings.Contains(st.LastError, w) {
						t.Errorf("last error %q does not contain %q", st.LastError, w)
					}
				}
				wantLogs(t, r, "ERROR wifi: could not join network", 1)
			})
		})
	}
}

func TestConnectErrorsRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		f.connectErrs = []error{syscall.ENETDOWN, syscall.EBUSY}
		r := startRun(t, wpa2, f, nil)

		r.at(2 * time.Second)
		st := r.wantPhase(PhaseRetrying)
		if want := `connect wlan0 to "home": device or resource busy`; !strings.Contains(st.LastError, want) {
			t.Errorf("last error %q does not contain %q", st.LastError, want)
		}
		r.at(6 * time.Second)
		if st := r.wantPhase(PhaseConnected); st.Failures != 2 || st.LastError != "" {
			t.Errorf("got %+v, want connected after 2 failures, error cleared", st)
		}
		wantConnects(t, r, secs(0, 1, 3))
		lines := wantLogs(t, r, "ERROR wifi: could not join network", 2)
		if len(lines) == 2 && !strings.Contains(lines[0], "network is down") {
			t.Errorf("first error line: %s", lines[0])
		}
	})
}

func TestEarlierAttemptStillRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		// Left behind by a Run before a restart.
		f.pending = &pending{at: time.Now().Add(time.Hour)}
		r := startRun(t, wpa2, f, nil)
		r.at(3 * time.Second)
		r.wantPhase(PhaseConnected)
		connect := fmt.Sprintf(`connect wlan0#3 "home" pmk=%s`, testPMK(t))
		wantCalls(t, f, "up wlan0", connect, "disconnect wlan0", connect)
		wantLogs(t, r, "ERROR", 0)
	})
}

func TestDropAndComeBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		r := startRun(t, wpa2, f, nil)
		r.at(2 * time.Minute)
		r.wantPhase(PhaseConnected)

		// The access point goes away; the next poll (every 5 s from 3 s)
		// notices it at 123 s, and Run rejoins at once.
		f.do(func(f *fakeRadio) { f.assoc, f.inRange = nil, false })
		r.at(123 * time.Second)
		r.wantPhase(PhaseConnecting)
		if lines := wantLogs(t, r, "WARN wifi: connection lost, rejoining", 1); len(lines) == 1 && !strings.Contains(lines[0], "lost after 2m0s: no longer associated") {
			t.Errorf("log line: %s", lines[0])
		}

		// It stays away for two attempts, then comes back.
		r.at(165 * time.Second)
		st := r.wantPhase(PhaseRetrying)
		if st.Failures != 2 || !strings.Contains(st.LastError, "network not found") {
			t.Errorf("while away: got %+v, want 2 failures, network not found", st)
		}
		f.do(func(f *fakeRadio) { f.inRange = true })
		r.at(169 * time.Second)
		if st := r.wantPhase(PhaseConnected); st.Since != r.start.Add(169*time.Second) {
			t.Errorf("connected since %v, want 169s", st.Since.Sub(r.start))
		}
		wantConnects(t, r, secs(0, 123, 144, 166))
		wantLogs(t, r, "INFO wifi: connected", 2)
		wantLogs(t, r, "ERROR wifi: could not join network", 2)
	})
}

func TestFlappingLinkBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		f.dropAfter = 2 * time.Second
		r := startRun(t, wpa2, f, nil)

		// Each cycle: associated 3 s after Connect, the drop seen at the
		// next poll 5 s later, then the backoff: 1, 2, 4 ... 60 s.
		r.at(10 * time.Minute)
		wantConnects(t, r, secs(0, 9, 19, 31, 47, 71, 111, 179, 247, 315, 383, 451, 519, 587))
		wantLogs(t, r, "ERROR wifi: connection lost soon after joining", 14)
		wantLogs(t, r, "WARN", 0)
	})
}

func TestAdoptsExistingAssociation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		f.assoc = &Link{Connected: true, SSID: testSSID, BSSID: testBSSID, SignalDBm: -60}
		r := startRun(t, wpa2, f, nil)
		r.at(0)
		if st := r.wantPhase(PhaseConnected); st.SignalDBm != -60 {
			t.Errorf("signal: got %d, want -60", st.SignalDBm)
		}
		wantCalls(t, f, "up wlan0")
	})
}

func TestLeavesAnotherNetwork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		f.assoc = &Link{Connected: true, SSID: "neighbour", BSSID: net.HardwareAddr{2, 0, 0, 0, 0, 9}}
		r := startRun(t, wpa2, f, nil)
		r.at(3 * time.Second)
		r.wantPhase(PhaseConnected)
		wantCalls(t, f, "up wlan0", "disconnect wlan0", fmt.Sprintf(`connect wlan0#3 "home" pmk=%s`, testPMK(t)))
		wantLogs(t, r, "INFO wifi: leaving another network", 1)
	})
}

func TestRoam(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		r := startRun(t, wpa2, f, nil)
		r.at(20 * time.Second)
		other := net.HardwareAddr{2, 0, 0, 0, 0, 2}
		f.do(func(f *fakeRadio) { f.assoc.BSSID, f.assoc.SignalDBm = other, -40 })
		r.at(23 * time.Second)
		if st := r.wantPhase(PhaseConnected); st.BSSID != other.String() || st.SignalDBm != -40 || st.Since != r.start.Add(3*time.Second) {
			t.Errorf("after roaming: got %+v, want bssid %s, -40 dBm, connected since 3s", st, other)
		}
		wantLogs(t, r, "INFO wifi: roamed", 1)
		wantConnects(t, r, secs(0))
	})
}

func TestInterfaceReplaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		r := startRun(t, wpa2, f, nil)
		r.at(100 * time.Second)
		// The driver restarts: wlan0 comes back with a new index, not
		// associated.
		f.do(func(f *fakeRadio) {
			f.ifaces = []Interface{{Index: 7, Name: "wlan0", Station: true}}
			f.assoc = nil
		})
		// Three failed polls (103, 108, 113 s), then a rejoin on #7.
		r.at(112 * time.Second)
		r.wantPhase(PhaseConnected)
		r.at(116 * time.Second)
		r.wantPhase(PhaseConnected)
		wantConnects(t, r, secs(0, 113))
		if calls := f.callList(); !strings.HasPrefix(calls[len(calls)-1], "connect wlan0#7 ") {
			t.Errorf("last call: got %s, want a connect on wlan0#7", calls[len(calls)-1])
		}
	})
}

func TestTransientLinkErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		r := startRun(t, wpa2, f, nil)
		r.at(5 * time.Second)
		f.do(func(f *fakeRadio) { f.linkErrs = maxLinkErrors - 1 })
		r.at(time.Minute)
		r.wantPhase(PhaseConnected)
		wantConnects(t, r, secs(0))
	})
}

func TestNoNL80211(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &logRecorder{t: t}
		state := new(State)
		start := time.Now()
		err := Run(context.Background(), wpa2, Options{
			Logger: slog.New(logs),
			State:  state,
			Open:   func() (Radio, error) { return nil, fmt.Errorf("open: %w", ErrNoNL80211) },
		})
		if err != nil || time.Since(start) != 0 {
			t.Errorf("got %v after %v, want nil at once", err, time.Since(start))
		}
		if st := state.Status(); st.Phase != PhaseNoHardware || !strings.Contains(st.Detail, "nl80211") {
			t.Errorf("status: got %+v, want no-hardware because of nl80211", st)
		}
		if got := logs.matching(""); len(got) != 1 || !strings.HasPrefix(got[0], "WARN wifi: no Wi-Fi hardware") {
			t.Errorf("log: got %q, want one line about no hardware", got)
		}
	})
}

func TestNoInterface(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		f.ifaces = []Interface{
			{Index: 0, Name: "", PHY: 0, Station: true}, // a P2P device, no netdev
			{Index: 4, Name: "ap0", PHY: 0},             // access point mode
		}
		logs := &logRecorder{t: t}
		state := new(State)
		start := time.Now()
		err := Run(context.Background(), wpa2, Options{Logger: slog.New(logs), State: state, Open: func() (Radio, error) { return f, nil }})
		if err != nil || time.Since(start) != DefaultHardwareWait {
			t.Errorf("got %v after %v, want nil after %v", err, time.Since(start), DefaultHardwareWait)
		}
		if st := state.Status(); st.Phase != PhaseNoHardware || !strings.Contains(st.Detail, "no wireless interface appeared within 30s") {
			t.Errorf("status: got %+v, want no-hardware, no interface within 30s", st)
		}
		if got := logs.matching(""); len(got) != 1 || !strings.HasPrefix(got[0], "WARN wifi: no Wi-Fi hardware") {
			t.Errorf("log: got %q, want one line about no hardware", got)
		}
		if !f.closed || len(f.callList()) != 0 {
			t.Errorf("radio: closed %v, calls %q; want closed, untouched", f.closed, f.callList())
		}
	})
}

func TestInterfaceAppearsLate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		ifaces := f.ifaces
		f.ifaces = nil
		r := startRun(t, wpa2, f, nil)
		r.at(4500 * time.Millisecond)
		r.wantPhase(PhaseStarting)
		f.do(func(f *fakeRadio) { f.ifaces = ifaces }) // the firmware loaded
		r.at(8 * time.Second)
		r.wantPhase(PhaseConnected)
		wantConnects(t, r, secs(5))
		wantLogs(t, r, "WARN", 0)
	})
}

func TestOptionsInterface(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		f.ifaces = append(f.ifaces, Interface{Index: 9, Name: "wlan1", Station: true})
		r := startRun(t, wpa2, f, func(o *Options) { o.Interface = "wlan1" })
		r.at(3 * time.Second)
		if st := r.wantPhase(PhaseConnected); st.Interface != "wlan1" {
			t.Errorf("interface: got %s, want wlan1", st.Interface)
		}
	})
}

func TestPickInterface(t *testing.T) {
	sta := func(i int, name string) Interface { return Interface{Index: i, Name: name, Station: true} }
	for _, tc := range []struct {
		name   string
		ifaces []Interface
		opt    string
		want   string // "" = errNoInterface
	}{
		{"none", nil, "", ""},
		{"wlan0 first", []Interface{sta(2, "wlp1s0"), sta(5, "wlan0")}, "", "wlan0"},
		{"lowest index", []Interface{sta(6, "wlx1"), sta(4, "wlx2")}, "", "wlx2"},
		{"stations only", []Interface{{Index: 2, Name: "wlan0"}, sta(8, "wlan1")}, "", "wlan1"},
		{"no netdev", []Interface{{Index: 0, Name: "", Station: true}}, "", ""},
		{"named", []Interface{sta(2, "wlan0"), sta(3, "wlan1")}, "wlan1", "wlan1"},
		{"named missing", []Interface{sta(2, "wlan0")}, "wlan1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pickInterface(tc.ifaces, tc.opt)
			switch {
			case tc.want == "" && !errors.Is(err, errNoInterface):
				t.Errorf("got %v, %v; want errNoInterface", got, err)
			case tc.want != "" && (err != nil || got.Name != tc.want):
				t.Errorf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		setup func(f *fakeRadio)
		at    time.Duration
		phase Phase // before cancelling
	}{
		{"waiting for hardware", wpa2, func(f *fakeRadio) { f.ifaces = nil }, 10 * time.Second, PhaseStarting},
		{"connecting", wpa2, nil, 2 * time.Second, PhaseConnecting},
		{"backing off", Config{SSID: testSSID, Passphrase: "not the passphrase"}, nil, 20500 * time.Millisecond, PhaseRetrying},
		{"connected", wpa2, nil, time.Minute, PhaseConnected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFake(t)
				if tc.setup != nil {
					tc.setup(f)
				}
				r := startRun(t, tc.cfg, f, nil)
				r.at(tc.at)
				r.wantPhase(tc.phase)
				n := len(f.callList())
				r.stop()
				r.wantPhase(PhaseStopped)
				if !f.closed {
					t.Error("radio not closed")
				}
				if calls := f.callList(); len(calls) != n {
					t.Errorf("calls after cancel: %q", calls[n:])
				}
			})
		})
	}
}

func TestRunErrors(t *testing.T) {
	noOpen := func() (Radio, error) { return nil, errors.New("must not open") }
	if err := Run(context.Background(), Config{}, Options{Open: noOpen}); err == nil || !strings.Contains(err.Error(), "ssid must be 1-32 bytes") {
		t.Errorf("empty config: got %v, want the ssid error", err)
	}
	eperm := fmt.Errorf("wifi: open nl80211: %w", syscall.EPERM)
	if err := Run(context.Background(), wpa2, Options{Open: func() (Radio, error) { return nil, eperm }}); !errors.Is(err, syscall.EPERM) {
		t.Errorf("open fails: got %v, want %v", err, eperm)
	}
	f := newFake(t)
	f.ifacesErr = syscall.EPERM
	err := Run(context.Background(), wpa2, Options{Open: func() (Radio, error) { return f, nil }})
	if !errors.Is(err, syscall.EPERM) || !strings.Contains(err.Error(), "wifi: list interfaces") {
		t.Errorf("listing fails: got %v, want wifi: list interfaces: EPERM", err)
	}
}

func TestStateZeroValue(t *testing.T) {
	var s State
	if got := s.Status(); got.Phase != PhaseStarting {
		t.Errorf("got %+v, want phase starting", got)
	}
}

// TestOtherNetworks: the preferred network is not there, so Run tries the
// next one at once (no backoff between the networks of a round) and stays
// on it; when that connection is lost it starts again with the preferred
// one, and only after a whole round has failed does it back off.
func TestOtherNetworks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(t)
		office := Config{SSID: "office", Passphrase: "office passphrase"}
		r := startRun(t, office, f, func(o *Options) { o.Others = []Config{wpa2} })

		r.at(23500 * time.Millisecond)
		if st := r.wantPhase(PhaseConnected); st.SSID != testSSID || st.Failures != 0 {
			t.Errorf("on the second network: %+v", st)
		}
		wantConnects(t, r, secs(0, 20))
		wantLogs(t, r, "WARN wifi: could not join network; trying the next one", 1)
		wantLogs(t, r, "ERROR wifi: could not join network", 0)

		// Both gone after a minute and more on "home".
		r.at(100 * time.Second)
		f.do(func(f *fakeRadio) { f.inRange, f.assoc = false, nil })
		r.at(150 * time.Second)
		var ssids []string
		for _, c := range f.callList() {
			if strings.HasPrefix(c, "connect ") {
				ssids = append(ssids, strings.Fields(c)[2])
			}
		}
		if want := []string{`"office"`, `"home"`, `"office"`, `"home"`, `"office"`}; !slices.Equal(ssids, want) {
			t.Errorf("networks tried: %q, want %q", ssids, want)
		}
		if lines := wantLogs(t, r, "ERROR wifi: could not join network", 1); len(lines) == 1 && !strings.Contains(lines[0], "ssid=home") {
			t.Errorf("the round's failure names the last network: %s", lines[0])
		}
		if st := r.state.Status(); st.Failures != 1 {
			t.Errorf("failures after one failed round: %+v", st)
		}
		wantNoSecret(t, r, "office passphrase")
	})
}

// TestOtherNetworksRefused: the same network twice, or a bad one among
// the others, is refused before anything starts.
func TestOtherNetworksRefused(t *testing.T) {
	noOpen := func() (Radio, error) { return nil, errors.New("opened") }
	if err := Run(context.Background(), wpa2, Options{Open: noOpen, Others: []Config{wpa2}}); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("the same network twice: %v", err)
	}
	if err := Run(context.Background(), wpa2, Options{Open: noOpen, Others: []Config{{SSID: "x", Passphrase: "short"}}}); err == nil || !strings.Contains(err.Error(), "passphrase") {
		t.Errorf("a bad other network: %v", err)
	}
}
