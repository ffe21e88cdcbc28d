package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rpbroker/broker/wire/wirepb"
)

// streamBuf is the read buffer for a body that is decoded as it streams in.
const streamBuf = 4 << 10

// ReadFrameCapped reads one frame declared up to maxBody bytes but never holds more than
// keep bytes of its body (plus a small read buffer). A body of at most keep bytes is
// returned whole. A longer one is decoded as it streams in and its payload discarded: the
// envelope fields come back (Payload nil) with an ErrTooLarge FrameError whose Cap is
// keep, so the caller can refuse it and still echo request_id and trace context. A
// traceparent or tracestate longer than keep is dropped from the envelope. A longer body
// that does not decode as a Frame yields ErrMalformed, one that ends early ErrBodyEOF,
// exactly as reading it whole and unmarshalling would.
func ReadFrameCapped(r io.Reader, maxBody, keep uint32) ([]byte, *wirepb.Frame, error) {
	var hdr [HeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, nil, &FrameError{Kind: ErrHeaderEOF, Err: err}
	}
	n, err := ParseHeader(hdr[:], maxBody)
	if err != nil {
		return nil, nil, err
	}
	if n <= keep {
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, nil, &FrameError{Kind: ErrBodyEOF, Declared: n, Err: err}
		}
		return body, nil, nil
	}
	env, err := streamEnvelope(r, int64(n), int(keep))
	if err != nil {
		return nil, nil, err
	}
	return nil, env, &FrameError{Kind: ErrTooLarge, Declared: n, Cap: keep}
}

// envelopeStream decodes a Frame body of a known length from a stream, keeping only the
// envelope fields. A malformed body is still read to its end, so that a body cut short
// reports ErrBodyEOF first, as a whole read would.
type envelopeStream struct {
	br        *bufio.Reader
	left      int64 // declared body bytes not consumed yet
	strBudget int   // bytes of trace strings still allowed in memory
	declared  uint32
	err       error // first I/O error
	malformed bool
}

func streamEnvelope(r io.Reader, n int64, strBudget int) (*wirepb.Frame, error) {
	s := &envelopeStream{br: bufio.NewReaderSize(io.LimitReader(r, n), streamBuf), left: n, strBudget: strBudget, declared: uint32(n)}
	f := new(wirepb.Frame)
	var groups []protowire.Number
	for s.left > 0 && s.err == nil && !s.malformed {
		num, typ := s.tag()
		if s.malformed || s.err != nil {
			break
		}
		switch typ {
		case protowire.VarintType:
			v := s.varint()
			if len(groups) == 0 {
				setVarint(f, num, v)
			}
		case protowire.Fixed32Type:
			s.skip(4)
		case protowire.Fixed64Type:
			s.skip(8)
		case protowire.BytesType:
			l := s.varint()
			switch {
			case s.malformed || s.err != nil:
			case l > uint64(s.left):
				s.malformed = true
			case len(groups) == 0 && (num == 8 || num == 9):
				if str, ok := s.str(int64(l)); ok && num == 8 {
					f.Traceparent = str
				} else if ok {
					f.Tracestate = str
				}
			default:
				s.skip(int64(l))
			}
		case protowire.StartGroupType:
			groups = append(groups, num)
		case protowire.EndGroupType:
			if len(groups) == 0 || groups[len(groups)-1] != num {
				s.malformed = true
				break
			}
			groups = groups[:len(groups)-1]
		default:
			s.malformed = true
		}
	}
	if len(groups) > 0 {
		s.malformed = true
	}
	if s.err == nil && s.left > 0 {
		s.skip(s.left) // drain a malformed body to tell it from a truncated one
	}
	switch {
	case s.err != nil:
		return nil, &FrameError{Kind: ErrBodyEOF, Declared: s.declared, Err: s.err}
	case s.malformed:
		return nil, ErrMalformed
	}
	return f, nil
}

func setVarint(f *wirepb.Frame, num protowire.Number, v uint64) {
	switch num {
	case 1:
		f.EnvelopeVersion = uint32(v)
	case 2:
		f.Kind = wirepb.FrameKind(int32(v))
	case 3:
		f.PayloadProtocol = uint32(v)
	case 5:
		f.RequestId = v
	case 6:
		f.PayloadEncoding = wirepb.PayloadEncoding(int32(v))
	case 7:
		f.DeadlineUnixMs = v
	}
}

func (s *envelopeStream) tag() (protowire.Number, protowire.Type) {
	v := s.varint()
	num, typ := protowire.DecodeTag(v)
	if v>>3 > uint64(protowire.MaxValidNumber) || num < protowire.MinValidNumber {
		s.malformed = true
	}
	return num, typ
}

// varint reads one varint that must end inside the declared body.
func (s *envelopeStream) varint() uint64 {
	if s.malformed || s.err != nil {
		return 0
	}
	b, err := s.br.Peek(int(min(s.left, binary.MaxVarintLen64)))
	if err != nil {
		s.fail(err)
		return 0
	}
	v, n := protowire.ConsumeVarint(b)
	if n < 0 {
		s.malformed = true
		return 0
	}
	s.skip(int64(n))
	return v
}

// str reads a string field of l bytes, keeping it only within the budget and when it is
// valid UTF-8 (proto3 strings must be).
func (s *envelopeStream) str(l int64) (string, bool) {
	if l > int64(s.strBudget) {
		s.skip(l)
		return "", false
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(s.br, b); err != nil {
		s.fail(err)
		return "", false
	}
	s.left -= l
	s.strBudget -= int(l)
	if !utf8.Valid(b) {
		s.malformed = true
		return "", false
	}
	return string(b), true
}

func (s *envelopeStream) skip(n int64) {
	if n > s.left {
		s.malformed = true
		n = s.left
	}
	for n > 0 && s.err == nil {
		step := int(min(n, 1<<30))
		d, err := s.br.Discard(step)
		s.left -= int64(d)
		n -= int64(d)
		if err != nil {
			s.fail(err)
		}
	}
}

func (s *envelopeStream) fail(err error) {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	s.err = err
}
