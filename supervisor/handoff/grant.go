package handoff

import (
	"github.com/rpbroker/broker/wire"
	"github.com/rpbroker/broker/wire/wirepb"
)

// Mode is what the broker knows about the backend behind a service's handoff endpoint,
// as far as Grant depends on it.
type Mode uint8

const (
	// ModeOff: the service has no handoff endpoint; v1 without handoff.
	ModeOff Mode = iota
	// ModeNoBackend: no verified backend, so no descriptor may leave the broker.
	ModeNoBackend
	// ModePlain: a verified backend none of whose spares proved it relays the EVENT: a
	// v1 backend (its probe declined), one that never answers, or a probe not back yet.
	ModePlain
	// ModeRelay: a spare to the verified backend proved, by its probe answer or ack, that
	// the backend writes the EVENT itself before it reads the client, and reads further
	// exchanges on that connection.
	ModeRelay
	// ModeQuiet: as ModeRelay, and the backend honours quiet offers (it acks only a
	// decline). It changes how acks are read, not what a client is granted.
	ModeQuiet
	numModes
)

func (m Mode) String() string {
	switch m {
	case ModeOff:
		return "off"
	case ModeNoBackend:
		return "no-backend"
	case ModePlain:
		return "plain"
	case ModeRelay:
		return "relay"
	case ModeQuiet:
		return "quiet"
	}
	return "unknown"
}

// Decision is what Negotiated offers a client.
type Decision struct {
	Token bool // issue a one-time handoff token
	// Caps are the extra server capability bits granted with the token: bit 1 (early
	// data) and bit 2 (write-ahead), only those the client set.
	Caps uint64
}

// Grant is the one rule for a client's handoff (docs/protocol.md, "Handoff" and
// "Extensions (ours)"), from the capability bits of its Hello and what the backend has
// proven:
//   - a token only to a client that set bit 0, and only when a handoff can succeed (an
//     endpoint and a verified backend);
//   - bits 1 and 2 only with the token, to a backend proven to write the EVENT before it
//     reads any client byte, since the client may write before the EVENT;
//   - a bit-1 client that cannot be granted gets no token at all: its early data sits
//     unread behind the Hello, and only backend_pipe delivers it exactly once. A bit-2
//     client still gets a plain token: it has written nothing yet.
func Grant(clientCaps uint64, m Mode) Decision {
	if clientCaps&wire.CapHandlePassing == 0 || m == ModeOff || m == ModeNoBackend {
		return Decision{}
	}
	extra := clientCaps & (wire.CapEarlyData | wire.CapWriteAhead)
	if m == ModeRelay || m == ModeQuiet {
		return Decision{Token: true, Caps: extra}
	}
	if clientCaps&wire.CapEarlyData != 0 {
		return Decision{}
	}
	return Decision{Token: true}
}

// Mode reports what the dispatcher's spares have proven about the verified backend now.
func (d *Dispatcher) Mode() Mode {
	expect, ok := d.expect()
	if !ok {
		return ModeNoBackend
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	m := ModePlain
	for _, s := range d.pool {
		if s.ext.Relayed && (expect < 0 || s.pid == expect) {
			if s.ext.Quiet {
				return ModeQuiet
			}
			m = ModeRelay
		}
	}
	return m
}

// EarlyData reports whether Grant gives bits 1 and 2 now: a pooled spare to the verified
// backend proved it relays. A Request with Early set is handed only to such a spare.
func (d *Dispatcher) EarlyData() bool {
	m := d.Mode()
	return m == ModeRelay || m == ModeQuiet
}

// RequestOf is the handoff a Negotiated announced for service: Early when it granted
// bit 1 or 2, since the client then may write before the EVENT.
func RequestOf(n *wirepb.Negotiated, service string) Request {
	return Request{Token: n.HandlePassedToken, ConnectionID: n.ConnectionId, Service: service,
		Early: n.ServerCapabilities&(wire.CapEarlyData|wire.CapWriteAhead) != 0}
}
