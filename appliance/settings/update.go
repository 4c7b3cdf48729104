package settings

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pc2/pc2/appliance/config"
)

// Update are the over-the-air update settings (the device's updater and
// pull loop get them converted).
type Update struct {
	// URL is the update server the device pulls releases from (empty:
	// updates only by push, `pc2 update`).
	URL string `json:"url,omitempty"`
	// Channel is ChannelStable (default) or ChannelBeta.
	Channel string `json:"channel,omitempty"`
	// Interval between checks (default 6h).
	Interval config.Duration `json:"interval,omitempty"`
	// Window limits checks and installs to a daily span, UTC
	// ("02:00-05:00"; empty: any time).
	Window string `json:"window,omitempty"`
	// Manual: the device checks but installs an update only when the
	// owner says so on the dashboard.
	Manual bool `json:"manual,omitempty"`
	// HealthTimeout is how long a new version has after its test boot
	// starts to pass the health check before the device returns to the
	// old one (default 5m).
	HealthTimeout config.Duration `json:"health_timeout,omitempty"`
}

// Update channels.
const (
	ChannelStable = "stable"
	ChannelBeta   = "beta"
)

// Check reports the first problem with u.
func (u *Update) Check() error {
	if u.URL != "" && !strings.HasPrefix(u.URL, "http://") && !strings.HasPrefix(u.URL, "https://") {
		return fmt.Errorf("update: url %q is not an http(s) URL", u.URL)
	}
	if u.Channel != "" && u.Channel != ChannelStable && u.Channel != ChannelBeta {
		return fmt.Errorf("update: channel %q: want stable or beta", u.Channel)
	}
	if _, err := ParseWindow(u.Window); err != nil {
		return err
	}
	if u.HealthTimeout != 0 && time.Duration(u.HealthTimeout) < 30*time.Second {
		return fmt.Errorf("update: health_timeout %s is below 30s", time.Duration(u.HealthTimeout))
	}
	if u.Interval != 0 && time.Duration(u.Interval) < time.Second {
		return fmt.Errorf("update: interval %s is below 1s", time.Duration(u.Interval))
	}
	return nil
}

// Window is a daily span of time, in minutes after midnight UTC; the
// zero value is the whole day.
type Window struct{ From, To int }

// ParseWindow reads "HH:MM-HH:MM" ("" is the whole day).
func ParseWindow(s string) (Window, error) {
	if s == "" {
		return Window{}, nil
	}
	a, b, ok := strings.Cut(s, "-")
	var w Window
	err := errors.New("no dash")
	if ok {
		if w.From, err = minuteOfDay(a); err == nil {
			w.To, err = minuteOfDay(b)
		}
	}
	if err != nil || w.From == w.To {
		return Window{}, fmt.Errorf("update window %q: want HH:MM-HH:MM (UTC), two different times", s)
	}
	return w, nil
}

func minuteOfDay(s string) (int, error) {
	t, err := time.Parse("15:04", strings.TrimSpace(s))
	if err != nil {
		return 0, err
	}
	return t.Hour()*60 + t.Minute(), nil
}
