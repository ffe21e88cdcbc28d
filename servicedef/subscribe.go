package servicedef

import "sync"

// subscriber is one Subscribe channel. The loader never blocks on it: when the buffer is
// full the change is dropped and the subscriber flagged; the next delivery that finds room
// sends a Resync first. Coalescing per service was rejected as more state for no gain: after
// a Resync the subscriber reads the snapshot, which is always complete.
type subscriber struct {
	ch   chan Change
	lost bool // guarded by Loader.mu
}

func (s *subscriber) deliver(c Change) {
	if s.lost {
		select {
		case s.ch <- Change{Kind: Resync}:
			s.lost = false
		default:
			return
		}
	}
	select {
	case s.ch <- c:
	default:
		s.lost = true
	}
}

// Subscribe returns a channel of changes and a function that cancels the subscription and
// closes the channel. The channel is also closed when Run returns. A subscriber that falls
// behind receives a Resync instead of the changes it missed.
func (l *Loader) Subscribe() (<-chan Change, func()) {
	s := &subscriber{ch: make(chan Change, l.o.subBuffer)}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		close(s.ch)
		return s.ch, func() {}
	}
	l.subs[s] = struct{}{}
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if _, ok := l.subs[s]; ok {
				delete(l.subs, s)
				close(s.ch)
			}
		})
	}
}

func (l *Loader) notify(changes []Change) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range changes {
		for s := range l.subs {
			s.deliver(c)
		}
	}
}

func (l *Loader) closeSubs() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for s := range l.subs {
		close(s.ch)
		delete(l.subs, s)
	}
}
