//go:build !linux

package wifi

import "log/slog"

// openKernel: nl80211 is Linux's; elsewhere there is no Wi-Fi to manage.
func openKernel([]string, *slog.Logger) (Radio, error) { return nil, ErrNoNL80211 }
