package supervisor

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpbroker/broker/supervisor/launch"
	"github.com/rpbroker/broker/supervisor/registry"
	"github.com/rpbroker/broker/supervisor/upgrade"
	"github.com/rpbroker/broker/supervisor/upgrade/statepb"
	"github.com/rpbroker/broker/wire/identity"
)

// captureState is the running state as the next image needs it; it runs on the event
// loop. With h, the descriptors the next image inherits (listeners, the launched
// backends' pidfds and output pipes) are kept in h and named in the state; without (the
// pre-check's preview) every descriptor number is -1.
func (s *Supervisor) captureState(h *upgrade.Handover, requested time.Time, binary, nextBuildID string) (*statepb.State, error) {
	st := &statepb.State{
		Generation: s.generation, ConfigPath: s.cfg.Path, WriterVersion: s.o.Version, WriterBuildId: s.buildID(),
		Pid: int32(os.Getpid()), WrittenUnixNano: time.Now().UnixNano(), RequestedUnixNano: requested.UnixNano(),
		Binary: binary, NextBuildId: nextBuildID,
	}
	for _, svc := range s.cfg.Services {
		r := s.runners[svc.Name]
		if r == nil {
			continue
		}
		loop := r.loop.Load()
		if loop == nil {
			continue // still binding: the next image binds it
		}
		ino, err := upgrade.Inode(svc.Socket)
		if err != nil {
			return nil, fmt.Errorf("service %q: %w", svc.Name, err)
		}
		ss := &statepb.Service{Name: svc.Name, SocketPath: svc.Socket, ListenerFd: -1, Inode: ino,
			Inherited: s.unowned[svc.Socket]}
		if h != nil {
			if ss.ListenerFd, err = h.KeepConn(loop.Listener(), "listener "+svc.Socket); err != nil {
				return nil, fmt.Errorf("service %q: %w", svc.Name, err)
			}
		}
		st.Services = append(st.Services, ss)
	}
	if s.launch != nil && s.launch.m != nil {
		handed, budgets := s.launch.m.Handover()
		for _, c := range handed {
			b, err := backendState(h, c)
			if err != nil {
				return nil, err
			}
			st.Backends = append(st.Backends, b)
		}
		for _, b := range budgets {
			st.Budgets = append(st.Budgets, &statepb.Budget{Instance: b.Key.Instance, Service: b.Key.Service,
				Version: b.Key.Version, ExeHash: b.Key.ExeHash[:], WindowStartUnixNano: b.Window.UnixNano(),
				Attempts: int32(b.Attempts)})
		}
	}
	c := &statepb.Counters{LastConnectionId: s.shared.LastConnectionID(), UpgradesTotal: s.generation,
		ReloadsTotal: s.state.Load().reloadSeq, HellosByService: map[string]uint64{}, RefusalsByService: map[string]uint64{}}
	s.board.hellos.Range(func(k, v any) bool {
		hc := v.(*helloCount)
		c.HellosByService[k.(string)], c.RefusalsByService[k.(string)] = hc.hellos.Load(), hc.refusals.Load()
		c.HellosTotal += hc.hellos.Load()
		return true
	})
	st.Counters = c
	for _, e := range s.hasher.Entries() {
		st.Hashes = append(st.Hashes, &statepb.FileHash{Dev: e.Dev, Ino: e.Ino, Size: e.Size, MtimeNanos: e.MtimeNanos, Sum: e.Sum[:]})
	}
	return st, nil
}

func backendState(h *upgrade.Handover, c launch.Handed) (*statepb.Backend, error) {
	b := &statepb.Backend{Pid: int32(c.PID), Pidfd: -1, StdoutFd: -1, StderrFd: -1, Endpoint: c.Endpoint,
		Instance: c.Key.Instance, Service: c.Key.Service, Version: c.Key.Version, ExeHash: c.Key.ExeHash[:],
		Binary: c.Binary, StartedUnixNano: c.Started.UnixNano(), LastUsedUnixNano: c.LastUsed.UnixNano(),
		IdleTimeoutNanos: int64(c.Idle)}
	if h == nil {
		return b, nil
	}
	var err error
	if c.Stdout != nil {
		if b.StdoutFd, err = h.KeepConn(c.Stdout, "backend stdout"); err != nil {
			return nil, err
		}
	}
	if c.Stderr != nil {
		if b.StderrFd, err = h.KeepConn(c.Stderr, "backend stderr"); err != nil {
			return nil, err
		}
	}
	// A pidfd lets the next image check that the pid still names this child.
	if fd, err := unix.PidfdOpen(c.PID, 0); err == nil {
		b.Pidfd, err = h.Keep(fd, "backend pidfd")
		unix.Close(fd)
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// adoptionOf turns the restored backends and budgets into the launcher's Adoption.
func adoptionOf(st *statepb.State, timeout time.Duration, done func(int, error)) *launch.Adoption {
	a := &launch.Adoption{Timeout: timeout, Done: done}
	for _, b := range st.GetBackends() {
		h := launch.Handed{PID: int(b.GetPid()), Binary: b.GetBinary(), Endpoint: b.GetEndpoint(),
			Key:  registry.Key{Instance: b.GetInstance(), Service: b.GetService(), Version: b.GetVersion()},
			Idle: time.Duration(b.GetIdleTimeoutNanos()), Started: time.Unix(0, b.GetStartedUnixNano()),
			LastUsed: time.Unix(0, b.GetLastUsedUnixNano()), Pidfd: upgrade.File(b.GetPidfd(), "backend pidfd"),
			Stdout: upgrade.File(b.GetStdoutFd(), "backend stdout"), Stderr: upgrade.File(b.GetStderrFd(), "backend stderr")}
		copy(h.Key.ExeHash[:], b.GetExeHash())
		a.Children = append(a.Children, h)
	}
	for _, b := range st.GetBudgets() {
		k := registry.Key{Instance: b.GetInstance(), Service: b.GetService(), Version: b.GetVersion()}
		copy(k.ExeHash[:], b.GetExeHash())
		a.Budgets = append(a.Budgets, launch.Budget{Key: k, Window: time.Unix(0, b.GetWindowStartUnixNano()), Attempts: int(b.GetAttempts())})
	}
	return a
}

// restoreCounters continues the previous image's counters and hash cache; New calls it
// before any loop runs.
func (s *Supervisor) restoreCounters(st *statepb.State) {
	c := st.GetCounters()
	s.shared.ResumeConnectionIDs(c.GetLastConnectionId())
	for name, n := range c.GetHellosByService() {
		hc := &helloCount{}
		hc.hellos.Store(n)
		hc.refusals.Store(c.GetRefusalsByService()[name])
		s.board.hellos.Store(name, hc)
	}
	s.publish(func(next *snapshot) { next.reloadSeq = c.GetReloadsTotal() })
	hashes := make([]identity.HashEntry, 0, len(st.GetHashes()))
	for _, h := range st.GetHashes() {
		e := identity.HashEntry{Dev: h.GetDev(), Ino: h.GetIno(), Size: h.GetSize(), MtimeNanos: h.GetMtimeNanos()}
		copy(e.Sum[:], h.GetSum())
		hashes = append(hashes, e)
	}
	s.hasher.Remember(hashes)
}
