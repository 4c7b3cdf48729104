package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"time"

	"github.com/pc2/pc2/appliance/hardware"
	"github.com/pc2/pc2/appliance/personal"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/internal/netaddr"
	"github.com/pc2/pc2/provisioning/password"
	"github.com/pc2/pc2/services/cloud"
	"github.com/pc2/pc2/services/wifi"
)

// deviceInfo is GET /api/device.
type deviceInfo struct {
	Settings       *settings.Settings `json:"settings"`
	SettingsSource string             `json:"settings_source"`
	SettingsIssue  string             `json:"settings_problem,omitempty"`
	// HostName is the running system's (the init sets the settings').
	HostName  string         `json:"host_name"`
	Board     hardware.Board `json:"board"`
	Light     string         `json:"status_light"`
	Network   NetworkStatus  `json:"network"`
	WiFi      *wifi.Status   `json:"wifi,omitempty"`
	Processes []Process      `json:"processes"`
	Memory    Memory         `json:"memory"`
	Version   string         `json:"version,omitempty"`
	Perm      *PermStatus    `json:"perm,omitempty"`
	// BackupEngine is what the image's backup engine says it is
	// (`restic version`), or why it does not run.
	BackupEngine string `json:"backup_engine,omitempty"`
}

// routes adds the admin API to the personal node's mux.
func (d *Device) routes(mux *http.ServeMux) {
	d.updateRoutes(mux)
	mux.HandleFunc("GET /api/device", d.admin(func(w http.ResponseWriter, r *http.Request) {
		info := deviceInfo{
			Settings:       d.loaded.Redacted(),
			SettingsSource: d.loaded.Source,
			Board:          d.board,
			Light:          d.light.State().String(),
			Network:        d.net.Status(),
			Version:        d.opts.Version,
			Processes:      processes("/proc"),
			Memory:         memory("/proc", "/sys"),
			Perm:           d.perm,
			BackupEngine:   d.backupEngine(),
		}
		info.HostName, _ = os.Hostname()
		if d.loaded.WiFi != nil {
			st := d.wifi.Status()
			info.WiFi = &st
		}
		if d.loaded.Problem != nil {
			info.SettingsIssue = d.loaded.Problem.Error()
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(info)
	}))
	mux.HandleFunc("GET /api/device/logs", d.admin(func(w http.ResponseWriter, r *http.Request) {
		if d.logs == nil {
			http.Error(w, "the logs are kept in memory only on this device (perm not writable at start)", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := d.logs.Copy(w); err != nil {
			d.log.Warn("log download cut short", "err", err)
		}
	}))
	mux.HandleFunc("POST /api/device/reboot", d.admin(func(w http.ResponseWriter, r *http.Request) {
		d.log.Warn("reboot requested through the admin API", "from", r.RemoteAddr)
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte("rebooting\n"))
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		go func() {
			if err := d.opts.Reboot(); err != nil {
				d.log.Error("reboot failed", "err", err)
			}
		}()
	}))
}

// admin wraps h with the admin password check (basic auth, user "admin").
func (d *Device) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		hash := d.loaded.AdminPasswordHash
		if hash == "" {
			http.Error(w, "no admin password is set on this device (pc2 image settings --admin-password-file)", http.StatusForbidden)
			return
		}
		user, pw, ok := r.BasicAuth()
		if ok && user == "admin" {
			d.verify.Lock()
			remembered := d.guard.Remembered(hash, pw)
			err := d.guard.Check(clientOf(r), hash, pw)
			if !remembered {
				// argon2id's 19 MiB would otherwise stay in the heap of a
				// process that idles in a few tens of MB on a Pi.
				debug.FreeOSMemory()
			}
			d.verify.Unlock()
			switch {
			case err == nil:
				h(w, r)
				return
			case errors.Is(err, password.ErrLimited):
				d.log.Warn("admin password attempts limited", "from", r.RemoteAddr)
				w.Header().Set("Retry-After", "6")
				http.Error(w, "too many admin password attempts; try again later", http.StatusTooManyRequests)
				return
			case !errors.Is(err, password.ErrMismatch):
				d.log.Error("admin password hash unusable", "err", err)
			}
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="PC2 device admin", charset="UTF-8"`)
		http.Error(w, "admin password required", http.StatusUnauthorized)
	}
}

// clientOf is the client of a request as the password guard counts it:
// the admin API is served only on the device's own listener, never
// through a relay or gateway, so the kernel's peer address is the client,
// local when it is on the local network.
func clientOf(r *http.Request) password.Client {
	host := netaddr.Host(r.RemoteAddr)
	a, err := netip.ParseAddr(host)
	return password.Client{Addr: host, Local: err == nil && cloud.DefaultLocalNet(a)}
}

// serveSupernodeStatus serves the admin API and the supernode's status on
// ln (nil: personal.DefaultListen), until the returned stop is called.
func (d *Device) serveSupernodeStatus(ln net.Listener) (stop func(), err error) {
	if ln == nil {
		if ln, err = net.Listen("tcp", personal.DefaultListen); err != nil {
			return nil, fmt.Errorf("status port: %w", err)
		}
	}
	mux := http.NewServeMux()
	d.routes(mux)
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		st := struct {
			Profile string   `json:"profile"`
			State   string   `json:"state"`
			Addrs   []string `json:"addrs,omitempty"`
		}{Profile: "supernode", State: "starting"}
		if a := d.snAddrs.Load(); a != nil {
			st.State, st.Addrs = "online", *a
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("status port stopped", "err", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}, nil
}

// logFile is the personal cloud's download of the log on perm (nil
// without one).
func (d *Device) logFile() func(io.Writer) error {
	if d.logs == nil {
		return nil
	}
	return d.logs.Copy
}
