package main

import (
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Timestamp layouts: milliseconds in both formats, so lines of one burst stay ordered
// and a Hello's took= can be matched against the lines around it.
const (
	jsonTimeLayout = "2006-01-02T15:04:05.000Z07:00"
	textTimeLayout = "15:04:05.000"
)

// liveLog is the broker's log output with a level and a format that a reload can change
// while every logger derived from it (per service, per backend) keeps writing through it.
// The level is checked by zerolog's sampler hook before an event is built, so a disabled
// debug line costs one atomic load, as with a fixed level.
type liveLog struct {
	out     io.Writer
	noColor bool                         // NO_COLOR was set: no colour even on a terminal
	level   atomic.Int32                 // zerolog.Level
	enc     atomic.Pointer[formatWriter] // JSON straight to out, or a ConsoleWriter over it
}

type formatWriter struct {
	io.Writer
	name string // "json" or "text"
}

// newLiveLog starts with the given config values (see set). Colour follows the
// no-color.org convention: any non-empty NO_COLOR turns it off.
func newLiveLog(out io.Writer, format, level string) *liveLog {
	l := &liveLog{out: out, noColor: os.Getenv("NO_COLOR") != ""}
	l.set(format, level)
	return l
}

// logger returns the root logger. Its own level stays at trace: liveLog.Sample decides.
// The timestamp is written by a hook rather than zerolog's Timestamp, whose layout is a
// zerolog package variable (seconds only by default) that the broker does not change.
func (l *liveLog) logger() zerolog.Logger {
	return zerolog.New(l).Level(zerolog.TraceLevel).Sample(l).Hook(msTimestamp{}).
		With().Int("broker_pid", os.Getpid()).Logger()
}

// msTimestamp stamps each line with the local time to the millisecond.
type msTimestamp struct{}

func (msTimestamp) Run(e *zerolog.Event, _ zerolog.Level, _ string) {
	e.Str(zerolog.TimestampFieldName, time.Now().Format(jsonTimeLayout))
}

// set swaps the format (auto: JSON unless out is a terminal) and the level (unparseable
// or empty: info). It returns the format and level now in force. Text is coloured only
// on a terminal and without NO_COLOR: a pipe or a file gets plain text.
func (l *liveLog) set(format, level string) (string, zerolog.Level) {
	f, ok := l.out.(*os.File)
	tty := ok && isTerminal(f)
	if format == "" || strings.EqualFold(format, "auto") {
		format = "json"
		if tty {
			format = "text"
		}
	}
	if strings.EqualFold(format, "text") {
		format = "text"
	} else {
		format = "json"
	}
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	if cur := l.enc.Load(); cur == nil || cur.name != format {
		w := &formatWriter{Writer: l.out, name: format}
		if format == "text" {
			w.Writer = zerolog.ConsoleWriter{Out: l.out, TimeFormat: textTimeLayout, NoColor: !tty || l.noColor}
		}
		l.enc.Store(w)
	}
	l.level.Store(int32(lvl))
	return format, lvl
}

// Sample implements zerolog.Sampler: the level gate every derived logger shares.
func (l *liveLog) Sample(lvl zerolog.Level) bool { return lvl >= zerolog.Level(l.level.Load()) }

// Write hands one encoded event to the format in force.
func (l *liveLog) Write(p []byte) (int, error) { return l.enc.Load().Write(p) }
