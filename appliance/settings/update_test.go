package settings

import (
	"strings"
	"testing"
)

func TestParseWindow(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Window
	}{
		{"", Window{}},
		{"02:00-05:00", Window{120, 300}},
		{" 22:30 - 01:15 ", Window{1350, 75}},
		{"00:00-06:00", Window{0, 360}},
		{"23:59-00:00", Window{1439, 0}},
	} {
		w, err := ParseWindow(tc.in)
		if err != nil || w != tc.want {
			t.Errorf("ParseWindow(%q) = %+v, %v; want %+v", tc.in, w, err, tc.want)
		}
	}
	for _, in := range []string{"02:00", "02:00-02:00", "25:00-03:00", "02:60-03:00", "2-3", "02:00-05:00-06:00", "-", "02:00-", "x"} {
		if w, err := ParseWindow(in); err == nil {
			t.Errorf("ParseWindow(%q) = %+v, want an error", in, w)
		}
	}
}

func TestUpdateErrors(t *testing.T) {
	for _, c := range []struct{ update, want string }{
		{`{"url":"ftp://x"}`, `update: url "ftp://x" is not an http(s) URL`},
		{`{"channel":"nightly"}`, `update: channel "nightly": want stable or beta`},
		{`{"window":"02:00"}`, `update window "02:00": want HH:MM-HH:MM (UTC), two different times`},
		{`{"health_timeout":"10s"}`, "update: health_timeout 10s is below 30s"},
		{`{"interval":"10ms"}`, "update: interval 10ms is below 1s"},
	} {
		_, err := Parse([]byte(`{"profile":"personal","update":` + c.update + `}`))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.update, err, c.want)
		}
	}
	for _, ch := range []string{"", ChannelStable, ChannelBeta} {
		if _, err := Parse([]byte(`{"profile":"personal","update":{"channel":"` + ch + `"}}`)); err != nil {
			t.Errorf("channel %q: %v", ch, err)
		}
	}
}
