package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Decoding errors. Each maps to a stable Code through CodeOf.
var (
	// ErrTruncated means the input ends before the frame does.
	ErrTruncated = errors.New("wire: truncated frame")
	// ErrVersion means the first header byte is not Version.
	ErrVersion = errors.New("wire: unsupported protocol version")
	// ErrTooLarge means the declared body length is over the caller's limit.
	ErrTooLarge = errors.New("wire: frame too large")
	// ErrUnknownType means the type byte names no frame this version knows.
	ErrUnknownType = errors.New("wire: unknown frame type")
	// ErrMalformed means the body does not parse as its type says.
	ErrMalformed = errors.New("wire: malformed frame body")
	// ErrNestedBatch means a BATCH holds another BATCH.
	ErrNestedBatch = errors.New("wire: batch inside batch")
)

// CodeOf maps a decoding error to the code an ERROR frame reports.
func CodeOf(err error) Code {
	switch {
	case errors.Is(err, ErrVersion):
		return CodeVersion
	case errors.Is(err, ErrTooLarge):
		return CodeFrameTooLarge
	}
	return CodeBadFrame
}

// maxListLen bounds the element count of a list field (HELLO and CONTROL
// businesses) independently of the frame size. A list element takes at
// least one byte, so a count over the bytes left is refused too: a small
// frame cannot make the decoder allocate for a list it does not hold.
const maxListLen = 64

// Header is a decoded frame header.
type Header struct {
	Version uint8
	Type    Type
	Flags   uint8
	Length  int // body length
}

// ParseHeader decodes the header at the start of b and checks it against
// max, the largest body length the caller accepts. It returns ErrTruncated
// when b is shorter than HeaderLen.
func ParseHeader(b []byte, max int) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, ErrTruncated
	}
	h := Header{Version: b[0], Type: Type(b[1]), Flags: b[2], Length: int(binary.BigEndian.Uint32(b[3:HeaderLen]))}
	if h.Version != Version {
		return h, fmt.Errorf("%w: %d", ErrVersion, h.Version)
	}
	if h.Length > max || h.Length < 0 {
		return h, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, h.Length, max)
	}
	if h.Type == 0 || h.Type > maxKnownType {
		return h, fmt.Errorf("%w: %#02x", ErrUnknownType, uint8(h.Type))
	}
	return h, nil
}

// Decode decodes the frame at the start of b and returns it with the number
// of bytes it took. max bounds the body length, and for a compressed BATCH
// also its uncompressed length. Byte-slice fields of the result are copies:
// b may be reused once Decode returns. Bytes after the last field a frame
// type defines are ignored, so later versions can append fields.
func Decode(b []byte, max int) (Frame, int, error) {
	h, err := ParseHeader(b, max)
	if err != nil {
		return nil, 0, err
	}
	n := HeaderLen + h.Length
	if len(b) < n {
		return nil, 0, ErrTruncated
	}
	f, err := decodeBody(h, b[HeaderLen:n], max)
	if err != nil {
		return nil, 0, err
	}
	return f, n, nil
}

func decodeBody(h Header, body []byte, max int) (Frame, error) {
	r := FieldReader{b: body}
	var f Frame
	switch h.Type {
	case TypeHello:
		x := &Hello{}
		x.Token = r.Str()
		x.App = r.Str()
		x.Device = r.Str()
		x.Platform = r.Str()
		x.Version = r.Str()
		x.Businesses = r.Strs()
		x.Epoch = r.Str()
		x.Seq = r.Uvarint()
		x.Caps = r.Uvarint()
		if h.Flags&FlagGroupCursors != 0 {
			x.GroupCursors = r.groupCursors()
		}
		f = x
	case TypeWelcome:
		x := &Welcome{}
		x.Session = r.Str()
		x.Node = r.Str()
		x.Heartbeat = r.Uvarint()
		x.Recovered = r.Bool()
		x.Epoch = r.Str()
		x.Acked = r.Uvarint()
		x.MaxFrame = r.Uvarint()
		x.Caps = r.Uvarint()
		f = x
	case TypePush:
		x := &Push{Redelivery: h.Flags&FlagRedelivery != 0, Gap: h.Flags&FlagGap != 0}
		x.Seq = r.Uvarint()
		x.ID = r.Str()
		x.Business = r.Str()
		x.Priority = Priority(r.Uint8())
		x.Created = r.Uvarint()
		x.Group = r.Str()
		x.Payload = r.Bytes()
		if h.Flags&FlagGroupSeq != 0 {
			x.GroupEpoch = r.Str()
			x.GroupSeq = r.Uvarint()
		}
		f = x
	case TypeAck:
		f = &Ack{Seq: r.Uvarint()}
	case TypePing:
		f = &Ping{Time: r.Uvarint()}
	case TypePong:
		f = &Pong{Time: r.Uvarint()}
	case TypeUp:
		x := &Up{}
		x.Request = r.Uvarint()
		x.Business = r.Str()
		x.Payload = r.Bytes()
		f = x
	case TypeUpReply:
		x := &UpReply{}
		x.Request = r.Uvarint()
		x.Code = r.code()
		x.Payload = r.Bytes()
		f = x
	case TypeJoin:
		x := &Join{}
		x.Request = r.Uvarint()
		x.Group = r.Str()
		f = x
	case TypeLeave:
		x := &Leave{}
		x.Request = r.Uvarint()
		x.Group = r.Str()
		f = x
	case TypeControl:
		x := &Control{}
		x.Kind = ControlKind(r.Uint8())
		x.Priority = Priority(r.Uint8())
		x.Reason = r.Str()
		x.Addr = r.Str()
		x.Businesses = r.Strs()
		f = x
	case TypeError:
		x := &Error{}
		x.Code = r.code()
		x.Request = r.Uvarint()
		x.Message = r.Str()
		f = x
	case TypeCatchUp:
		x := &CatchUp{}
		x.Group = r.Str()
		x.Recovered = r.Bool()
		x.Epoch = r.Str()
		x.Seq = r.Uvarint()
		f = x
	case TypeBatch:
		frames, err := decodeBatchBody(h.Flags, body, max)
		if err != nil {
			return nil, err
		}
		return &Batch{Frames: frames}, nil
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrMalformed, h.Type, r.err.Error())
	}
	return f, nil
}

// Each decodes the frames held by the batch in order and calls fn for each,
// stopping at the first error. max bounds each inner frame's body.
func (b *Batch) Each(max int, fn func(Frame) error) error {
	rest := b.Frames
	for len(rest) > 0 {
		f, n, err := Decode(rest, max)
		if err != nil {
			return err
		}
		if f.Type() == TypeBatch {
			return ErrNestedBatch
		}
		if err := fn(f); err != nil {
			return err
		}
		rest = rest[n:]
	}
	return nil
}

// FieldReader decodes the primitive fields frames are made of (uvarints,
// bytes, length-prefixed strings and byte slices). The first failure
// sticks and every later read returns a zero value, so a decoder reads
// straight through and checks Err once. pushd's node-to-node relay entries
// use the same encoding.
type FieldReader struct {
	b   []byte
	err error
}

// NewFieldReader reads fields from b.
func NewFieldReader(b []byte) *FieldReader { return &FieldReader{b: b} }

// Len is the number of bytes not read yet: an entry or body that may end
// before fields a later version added reads them only when some are left.
func (r *FieldReader) Len() int { return len(r.b) }

// Err returns the first decoding failure, or nil.
func (r *FieldReader) Err() error { return r.err }

var (
	errShortField = errors.New("field runs past the end of the body")
	errVarint     = errors.New("bad varint")
	errBool       = errors.New("bool byte is neither 0 nor 1")
	errCode       = errors.New("code out of range")
	errListLen    = fmt.Errorf("list of more than %d elements", maxListLen)
	// errEmptyCursors: FlagGroupCursors promises at least one cursor; an
	// encoder with none leaves the flag off.
	errEmptyCursors = errors.New("group cursor list flagged but empty")
)

// Uvarint reads an unsigned varint.

func (r *FieldReader) Uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		if n == 0 {
			r.err = errShortField
		} else {
			r.err = errVarint
		}
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Uint8 reads one byte.
func (r *FieldReader) Uint8() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = errShortField
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

// Bool reads a byte that must be 0 or 1.
func (r *FieldReader) Bool() bool {
	switch r.Uint8() {
	case 0:
		return false
	case 1:
		return true
	}
	if r.err == nil {
		r.err = errBool
	}
	return false
}

func (r *FieldReader) code() Code {
	v := r.Uvarint()
	if v > 0xFFFF {
		if r.err == nil {
			r.err = errCode
		}
		return 0
	}
	return Code(v)
}

// raw returns the next length-prefixed field without copying it.
func (r *FieldReader) raw() []byte {
	n := r.Uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errShortField
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// Str reads a length-prefixed string.
func (r *FieldReader) Str() string { return string(r.raw()) }

// Strs reads a list of strings: a uvarint count of at most maxListLen,
// then each string. An empty list is nil.
func (r *FieldReader) Strs() []string {
	n := r.Uvarint()
	if n == 0 || r.err != nil {
		return nil
	}
	if n > maxListLen {
		r.err = errListLen
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errShortField
		return nil
	}
	list := make([]string, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		list = append(list, r.Str())
	}
	return list
}

// groupCursors reads HELLO's group cursors: a uvarint count of 1 to
// maxListLen, then each cursor. A cursor takes at least three bytes, which
// bounds the count by the bytes left before anything is allocated.
func (r *FieldReader) groupCursors() []GroupCursor {
	n := r.Uvarint()
	if r.err != nil {
		return nil
	}
	switch {
	case n == 0:
		r.err = errEmptyCursors
		return nil
	case n > maxListLen:
		r.err = errListLen
		return nil
	case n > uint64(len(r.b))/3:
		r.err = errShortField
		return nil
	}
	list := make([]GroupCursor, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		list = append(list, GroupCursor{Group: r.Str(), Epoch: r.Str(), Seq: r.Uvarint()})
	}
	return list
}

// Bytes reads a length-prefixed byte slice, copied; empty is nil.
func (r *FieldReader) Bytes() []byte {
	v := r.raw()
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}
