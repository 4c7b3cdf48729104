package device

import (
	"reflect"
	"testing"
	"time"

	"github.com/pc2/pc2/appliance/config"
	"github.com/pc2/pc2/appliance/settings"
	"github.com/pc2/pc2/appliance/update/pull"
)

// TestPullConfig converts update settings with every field set into the
// pull loop's config, and none into its defaults.
func TestPullConfig(t *testing.T) {
	us := settings.Update{URL: "https://updates.test/", Channel: settings.ChannelBeta, Interval: config.Duration(time.Hour),
		Window: "22:30-01:15", HealthTimeout: config.Duration(2 * time.Minute), Manual: true}
	want := pull.Config{URL: "https://updates.test/", Channel: "beta", Interval: time.Hour, Window: pull.Window{From: 1350, To: 75}, Manual: true}
	if got := pullConfig(us); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := pullConfig(settings.Update{URL: "https://updates.test/"}); !reflect.DeepEqual(got, pull.Config{URL: "https://updates.test/"}) {
		t.Errorf("defaults: got %+v, want the URL only", got)
	}
}
