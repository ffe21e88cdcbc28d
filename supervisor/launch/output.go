package launch

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Bounds on backend output copied into the broker log: a chatty or hostile backend can
// neither blow up one log line nor flood the log.
const (
	maxLineBytes      = 4096
	outputLinesPerSec = 200  // over all children
	outputBurst       = 1000 // lines
)

// lineRate is a token bucket shared by every output reader.
type lineRate struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newLineRate(perSec, burst int, now func() time.Time) *lineRate {
	return &lineRate{rate: float64(perSec), burst: float64(burst), tokens: float64(burst), last: now(), now: now}
}

func (r *lineRate) allow() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.tokens = min(r.burst, r.tokens+now.Sub(r.last).Seconds()*r.rate)
	r.last = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}

// captureLines logs every line read from r until EOF or a read error (the deadline set
// after the child was reaped). Lines longer than maxLineBytes are cut; lines beyond the
// rate are dropped and counted, and the count is logged when lines flow again.
func captureLines(r io.Reader, log zerolog.Logger, rate *lineRate) {
	br := bufio.NewReaderSize(r, maxLineBytes)
	dropped := 0
	for {
		line, cut, err := readLine(br)
		if len(line) > 0 || cut {
			if rate.allow() {
				if dropped > 0 {
					log.Warn().Int("dropped_lines", dropped).Msg("backend output over the rate limit; lines dropped")
					dropped = 0
				}
				ev := log.Info()
				if cut {
					ev = ev.Bool("truncated", true)
				}
				ev.Msg(string(line))
			} else {
				dropped++
			}
		}
		if err != nil {
			break
		}
	}
	if dropped > 0 {
		log.Warn().Int("dropped_lines", dropped).Msg("backend output over the rate limit; lines dropped")
	}
}

// readLine returns the next line without its newline; cut reports that the rest of an
// over-long line was skipped.
func readLine(br *bufio.Reader) (line []byte, cut bool, err error) {
	line, err = br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		line = bytes.Clone(line)
		cut = true
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = br.ReadSlice('\n')
		}
	}
	return bytes.TrimRight(line, "\r\n"), cut, err
}
