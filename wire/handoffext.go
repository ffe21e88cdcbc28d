package wire

import "google.golang.org/protobuf/encoding/protowire"

// Extensions (ours) ride in field numbers v1 leaves undefined (above the reserved 5 to
// 10), which v1 peers skip as unknown fields; the v1 exchange is unchanged for them.
//
// HandoffOffer field 16 (varint), relay connection id: the broker lets the backend write the
// handoff-ready EVENT to the client itself, with this connection id, as soon as it has
// adopted the fd: the client then waits for one hop less.
// HandoffOffer field 17 (varint 1), reuse: the broker can send another exchange on this
// connection after the ack.
// Ack field 16 (varint 1), relayed: the backend wrote the EVENT; the broker must not.
// Ack field 17 (varint 1), reuse: the backend reads another exchange on this connection.
// HandoffOffer and ack field 18 (varint 1), probe (probe.go): the broker asks, on a fresh spare
// and without a client, what the backend would answer; an ext backend echoes it.
// HandoffOffer field 19 (varint 1), quiet: with relay and reuse, the backend acks only a
// decline, and then closes the connection; an accepted exchange gets no answer at all.
// Ack field 19 (varint 1), in the answer to a probe: the backend honours quiet.
//
// What an ext ack proves, per connection (the broker remembers it on the spare):
//   - reuse acked: the backend reads exactly the 16 token bytes, so the next exchange
//     sends the token and the offer frame in one sendmsg (one wake-up). A v1 backend
//     never gets that: v1 says the token message carries exactly 16 bytes.
//   - relayed acked: the backend writes the EVENT before reading any client byte, and
//     declines (closing the fd unread) when it cannot. Only then may Negotiated grant
//     early data (CapEarlyData, ours), and the handoff goes only over such a
//     connection. Whoever reads those bytes has told the client so; a client that saw no
//     EVENT resends them through backend_pipe.
//   - quiet echoed by the probe: the broker sends quiet offers on that connection and
//     reads nothing back after an accepted one, which spares both processes a write, a
//     read and the wake-ups they cause. A decline still arrives, as an ack and a close,
//     and is noticed when the spare is next taken (lazy.go).
//
// Early data rides with the Hello: a client that sets bit 1 writes it in the same write
// as the Hello, and the broker reads exactly one frame, so it waits unread. Hence the
// safety rule (registered.Route): a bit-1 client is handed off with the grant, over a
// proven relay spare, or not at all (no token, no handoff). A v1-style handoff could let
// a backend read the data and then fail the exchange, and the client would resend it.
const (
	fieldRelay protowire.Number = 16
	fieldReuse protowire.Number = 17
	fieldProbe protowire.Number = 18
	fieldQuiet protowire.Number = 19
)

// HandoffExt is what an offer asks or an ack answers beyond v1.
type HandoffExt struct {
	RelayConnID uint64 // offer only; 0 = the broker relays (v1)
	Relayed     bool   // ack only
	Reuse       bool
	Probe       bool // a capability probe (probe.go), not a handoff
	Quiet       bool // offer: ack only a decline; probe answer: quiet honoured
}

// appendHandoffExt appends the extension fields, encoded as unknown fields of an offer or ack;
// relay is the offer's connection id or the ack's 1.
func appendHandoffExt(b []byte, relay uint64, e HandoffExt) []byte {
	reuse, probe, quiet := e.Reuse, e.Probe, e.Quiet
	if relay != 0 {
		b = protowire.AppendTag(b, fieldRelay, protowire.VarintType)
		b = protowire.AppendVarint(b, relay)
	}
	if reuse {
		b = protowire.AppendTag(b, fieldReuse, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if probe {
		b = protowire.AppendTag(b, fieldProbe, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if quiet {
		b = protowire.AppendTag(b, fieldQuiet, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b
}

// parseHandoffExt reads the extension fields from a message's unknown fields; field 16 is
// returned raw, e has the flags.
func parseHandoffExt(b []byte) (relay uint64, e HandoffExt) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		if typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return
			}
			switch num {
			case fieldRelay:
				relay = v
			case fieldReuse:
				e.Reuse = v == 1
			case fieldProbe:
				e.Probe = v == 1
			case fieldQuiet:
				e.Quiet = v == 1
			}
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return
		}
		b = b[m:]
	}
	return
}
