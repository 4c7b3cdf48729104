package cloud

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// LogRing keeps the last lines a logger wrote, for the dashboard.
type LogRing struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
}

// NewLogRing keeps the last n lines.
func NewLogRing(n int) *LogRing { return &LogRing{lines: make([]string, n)} }

// Lines returns the kept lines, oldest first.
func (l *LogRing) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.full {
		return append([]string(nil), l.lines[:l.next]...)
	}
	return append(append([]string(nil), l.lines[l.next:]...), l.lines[:l.next]...)
}

func (l *LogRing) add(s string) {
	l.mu.Lock()
	l.lines[l.next] = s
	l.next++
	if l.next == len(l.lines) {
		l.next, l.full = 0, true
	}
	l.mu.Unlock()
}

// Handler returns a handler that keeps records of level info and above
// in the ring and passes every record on to next.
func (l *LogRing) Handler(next slog.Handler) slog.Handler {
	return &ringHandler{ring: l, next: next}
}

type ringHandler struct {
	ring   *LogRing
	next   slog.Handler
	prefix string // rendered attributes of WithAttrs
	group  string
}

func (h *ringHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= slog.LevelInfo || h.next.Enabled(ctx, lv)
}

func (h *ringHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelInfo {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s %s%s", r.Time.UTC().Format(time.DateTime), r.Level, r.Message, h.prefix)
		r.Attrs(func(a slog.Attr) bool {
			writeAttr(&b, h.group, a)
			return true
		})
		h.ring.add(b.String())
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func writeAttr(b *strings.Builder, group string, a slog.Attr) {
	if a.Equal(slog.Attr{}) {
		return
	}
	key := a.Key
	if group != "" {
		key = group + "." + key
	}
	fmt.Fprintf(b, " %s=%v", key, a.Value.Resolve())
}

func (h *ringHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, a := range as {
		writeAttr(&b, h.group, a)
	}
	return &ringHandler{ring: h.ring, next: h.next.WithAttrs(as), prefix: b.String(), group: h.group}
}

func (h *ringHandler) WithGroup(name string) slog.Handler {
	g := name
	if h.group != "" {
		g = h.group + "." + name
	}
	return &ringHandler{ring: h.ring, next: h.next.WithGroup(name), prefix: h.prefix, group: g}
}

// handleLogFile is the whole log kept on disk, as a text file to save.
func (s *Server) handleLogFile(w http.ResponseWriter, r *http.Request) {
	if s.opts.LogFile == nil {
		s.fail(w, r, http.StatusNotFound, "This device keeps its logs in memory only: the recent ones are on the dashboard.")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="pc2-logs.txt"`)
	w.Header().Set("Cache-Control", "no-store")
	if err := s.opts.LogFile(w); err != nil {
		s.log.Warn("log download cut short", "err", err)
	}
}
