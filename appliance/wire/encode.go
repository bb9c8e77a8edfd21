package wire

import (
	"encoding/binary"
	"fmt"
)

// Append appends the encoding of f (header and body) to dst and returns the
// extended buffer. It panics only on a Frame type this package does not
// define, which is a programming error.
func Append(dst []byte, f Frame) []byte {
	switch f := f.(type) {
	case *Push:
		return AppendPush(dst, f)
	case *Batch:
		return AppendBatch(dst, f.Frames, false)
	}
	start := len(dst)
	var flags uint8
	if h, ok := f.(*Hello); ok && len(h.GroupCursors) > 0 {
		flags = FlagGroupCursors
	}
	dst = appendHeader(dst, f.Type(), flags)
	switch f := f.(type) {
	case *Hello:
		dst = appendString(dst, f.Token)
		dst = appendString(dst, f.App)
		dst = appendString(dst, f.Device)
		dst = appendString(dst, f.Platform)
		dst = appendString(dst, f.Version)
		dst = appendStrings(dst, f.Businesses)
		dst = appendString(dst, f.Epoch)
		dst = binary.AppendUvarint(dst, f.Seq)
		dst = binary.AppendUvarint(dst, f.Caps)
		if len(f.GroupCursors) > 0 {
			dst = binary.AppendUvarint(dst, uint64(len(f.GroupCursors)))
			for _, c := range f.GroupCursors {
				dst = appendString(dst, c.Group)
				dst = appendString(dst, c.Epoch)
				dst = binary.AppendUvarint(dst, c.Seq)
			}
		}
	case *Welcome:
		dst = appendString(dst, f.Session)
		dst = appendString(dst, f.Node)
		dst = binary.AppendUvarint(dst, f.Heartbeat)
		dst = appendBool(dst, f.Recovered)
		dst = appendString(dst, f.Epoch)
		dst = binary.AppendUvarint(dst, f.Acked)
		dst = binary.AppendUvarint(dst, f.MaxFrame)
		dst = binary.AppendUvarint(dst, f.Caps)
	case *Ack:
		dst = binary.AppendUvarint(dst, f.Seq)
	case *Ping:
		dst = binary.AppendUvarint(dst, f.Time)
	case *Pong:
		dst = binary.AppendUvarint(dst, f.Time)
	case *Up:
		dst = binary.AppendUvarint(dst, f.Request)
		dst = appendString(dst, f.Business)
		dst = appendBytes(dst, f.Payload)
	case *UpReply:
		dst = binary.AppendUvarint(dst, f.Request)
		dst = binary.AppendUvarint(dst, uint64(f.Code))
		dst = appendBytes(dst, f.Payload)
	case *Join:
		dst = binary.AppendUvarint(dst, f.Request)
		dst = appendString(dst, f.Group)
	case *Leave:
		dst = binary.AppendUvarint(dst, f.Request)
		dst = appendString(dst, f.Group)
	case *Control:
		dst = append(dst, byte(f.Kind), byte(f.Priority))
		dst = appendString(dst, f.Reason)
		dst = appendString(dst, f.Addr)
		dst = appendStrings(dst, f.Businesses)
	case *Error:
		dst = binary.AppendUvarint(dst, uint64(f.Code))
		dst = binary.AppendUvarint(dst, f.Request)
		dst = appendString(dst, f.Message)
	case *CatchUp:
		dst = appendString(dst, f.Group)
		dst = appendBool(dst, f.Recovered)
		dst = appendString(dst, f.Epoch)
		dst = binary.AppendUvarint(dst, f.Seq)
	default:
		panic(fmt.Sprintf("wire: Append of unknown frame %T", f))
	}
	return finishHeader(dst, start)
}

// AppendPush appends a PUSH frame. It is the hot path of fan-out, so it
// avoids the interface dispatch of Append and never allocates when dst has
// room for the frame.
func AppendPush(dst []byte, p *Push) []byte {
	start := len(dst)
	var flags uint8
	if p.Redelivery {
		flags |= FlagRedelivery
	}
	if p.Gap {
		flags |= FlagGap
	}
	if p.GroupEpoch != "" {
		flags |= FlagGroupSeq
	}
	dst = appendHeader(dst, TypePush, flags)
	dst = binary.AppendUvarint(dst, p.Seq)
	dst = appendString(dst, p.ID)
	dst = appendString(dst, p.Business)
	dst = append(dst, byte(p.Priority))
	dst = binary.AppendUvarint(dst, p.Created)
	dst = appendString(dst, p.Group)
	dst = appendBytes(dst, p.Payload)
	if p.GroupEpoch != "" {
		dst = appendString(dst, p.GroupEpoch)
		dst = binary.AppendUvarint(dst, p.GroupSeq)
	}
	return finishHeader(dst, start)
}

// PushLen returns the exact encoded length of p, for sizing buffers.
func PushLen(p *Push) int {
	n := HeaderLen + uvarintLen(p.Seq) + stringLen(p.ID) + stringLen(p.Business) + 1 +
		uvarintLen(p.Created) + stringLen(p.Group) + uvarintLen(uint64(len(p.Payload))) + len(p.Payload)
	if p.GroupEpoch != "" {
		n += stringLen(p.GroupEpoch) + uvarintLen(p.GroupSeq)
	}
	return n
}

// SetPushFlag sets or clears a flag (FlagRedelivery, FlagGap) of an
// encoded PUSH frame in place, so a retransmit reuses the bytes it kept.
func SetPushFlag(frame []byte, flag uint8, on bool) {
	if len(frame) < HeaderLen || Type(frame[1]) != TypePush {
		return
	}
	if on {
		frame[2] |= flag
	} else {
		frame[2] &^= flag
	}
}

func appendHeader(dst []byte, t Type, flags uint8) []byte {
	return append(dst, Version, byte(t), flags, 0, 0, 0, 0)
}

// finishHeader writes the body length into the header that starts at start.
func finishHeader(dst []byte, start int) []byte {
	binary.BigEndian.PutUint32(dst[start+3:start+HeaderLen], uint32(len(dst)-start-HeaderLen))
	return dst
}

// AppendString appends s as a uvarint length and its bytes, the string
// encoding of every frame field.
func AppendString(dst []byte, s string) []byte { return appendString(dst, s) }

// AppendBytes appends b as a uvarint length and its bytes.
func AppendBytes(dst []byte, b []byte) []byte { return appendBytes(dst, b) }

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// appendStrings encodes a list: a uvarint count, then each string.
func appendStrings(dst []byte, list []string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(list)))
	for _, s := range list {
		dst = appendString(dst, s)
	}
	return dst
}

func appendBytes(dst []byte, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func appendBool(dst []byte, b bool) []byte {
	if b {
		return append(dst, 1)
	}
	return append(dst, 0)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func stringLen(s string) int { return uvarintLen(uint64(len(s))) + len(s) }
