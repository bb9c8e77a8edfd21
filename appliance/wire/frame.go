package wire

import "fmt"

// Version is the protocol version this package speaks. A frame whose first
// byte differs is refused with ErrVersion.
const Version = 1

// HeaderLen is the length of the fixed frame header.
const HeaderLen = 7

// Frame size limits. DefaultMaxFrame bounds what a device may send unless
// configured otherwise; CeilingMaxFrame is the hard upper bound any
// configuration may choose for device-to-server frames.
const (
	DefaultMaxFrame = 16 << 10
	CeilingMaxFrame = 64 << 10
)

// Type identifies a frame. Values are part of the protocol and never reused.
type Type uint8

// Frame types. Direction: C = device to server, S = server to device.
const (
	TypeHello    Type = 0x01 // C: first frame, authenticates the connection
	TypeWelcome  Type = 0x02 // S: answer to a valid HELLO
	TypePush     Type = 0x03 // S: a message
	TypeAck      Type = 0x04 // C: cumulative ack by inbox sequence number
	TypePing     Type = 0x05 // C: heartbeat
	TypePong     Type = 0x06 // S: heartbeat answer
	TypeUp       Type = 0x07 // C: upstream message for a business
	TypeUpReply  Type = 0x08 // S: answer to UP, JOIN or LEAVE
	TypeJoin     Type = 0x09 // C: join a group
	TypeLeave    Type = 0x0A // C: leave a group
	TypeControl  Type = 0x0B // S: kick, degraded, restored, drain, redirect
	TypeError    Type = 0x0C // S or C: a failure with a stable code
	TypeBatch    Type = 0x0D // S or C: several frames in one, maybe lz4-compressed
	TypeCatchUp  Type = 0x0E // S: where a group's catch-up after joining it left the device
	maxKnownType      = TypeCatchUp
)

var typeNames = [...]string{
	TypeHello: "HELLO", TypeWelcome: "WELCOME", TypePush: "PUSH", TypeAck: "ACK",
	TypePing: "PING", TypePong: "PONG", TypeUp: "UP", TypeUpReply: "UP_REPLY",
	TypeJoin: "JOIN", TypeLeave: "LEAVE", TypeControl: "CONTROL", TypeError: "ERROR",
	TypeBatch: "BATCH", TypeCatchUp: "CATCHUP",
}

func (t Type) String() string {
	if t >= 1 && t <= maxKnownType {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%#02x)", uint8(t))
}

// Header flag bits. A flag is meaningful only for the frame types named.
const (
	// FlagRedelivery marks a PUSH the server retransmits on this
	// connection because its ack was overdue (replays after a reconnect
	// are not marked: the server cannot tell whether they arrived).
	FlagRedelivery uint8 = 1 << 0
	// FlagGap marks a PUSH whose seq deliberately skips past the previous
	// one on this connection (or the WELCOME's ack cursor): the messages in
	// between expired, were trimmed by the inbox cap, or were shed while
	// the region degrades, and will not come. A jump without it means a
	// frame was lost on the way; the device must not ack past it.
	FlagGap uint8 = 1 << 1
	// FlagGroupSeq marks a PUSH of a group that keeps a catch-up stream:
	// its body carries the message's position in that stream (GroupEpoch,
	// GroupSeq) after the payload.
	FlagGroupSeq uint8 = 1 << 2
	// FlagLZ4 marks a BATCH whose body is an lz4 block.
	FlagLZ4 uint8 = 1 << 0
	// FlagGroupCursors marks a HELLO whose body carries the device's group
	// cursors (GroupCursors) after the caps.
	FlagGroupCursors uint8 = 1 << 0
)

// Capability bits a device offers in HELLO and the server accepts in WELCOME.
const (
	// CapLZ4 means the device can read lz4-compressed BATCH frames.
	CapLZ4 uint64 = 1 << 0
	// CapGroupCursors means the device keeps a cursor per group that
	// keeps a catch-up stream and reads CATCHUP frames, which the server
	// sends only to devices whose WELCOME accepted this bit.
	CapGroupCursors uint64 = 1 << 1
)

// Priority of a message. Zero is never sent; senders that omit a priority
// mean PriorityNormal.
type Priority uint8

// Message priorities, lowest first, so that "shed everything below P" is a
// plain comparison.
const (
	PriorityLow    Priority = 1
	PriorityNormal Priority = 2
	PriorityHigh   Priority = 3
)

func (p Priority) String() string {
	switch p {
	case PriorityLow:
		return "low"
	case PriorityNormal:
		return "normal"
	case PriorityHigh:
		return "high"
	}
	return fmt.Sprintf("Priority(%d)", uint8(p))
}

// ParsePriority maps "low", "normal" and "high" to their Priority.
func ParsePriority(s string) (Priority, error) {
	switch s {
	case "low":
		return PriorityLow, nil
	case "normal", "":
		return PriorityNormal, nil
	case "high":
		return PriorityHigh, nil
	}
	return 0, fmt.Errorf("priority %q: want low, normal or high", s)
}

// ControlKind says what a CONTROL frame asks of the device.
type ControlKind uint8

// Control kinds.
const (
	// ControlKick: another connection of this device took over; do not
	// reconnect automatically on this session.
	ControlKick ControlKind = 1
	// ControlDegraded: the region sheds messages at or below Priority
	// (of the listed Businesses, or of every business when none are
	// listed); fall back to polling for those.
	ControlDegraded ControlKind = 2
	// ControlRestored: degradation is over.
	ControlRestored ControlKind = 3
	// ControlDrain: this node is draining; reconnect (to Addr when set)
	// after a jittered delay.
	ControlDrain ControlKind = 4
	// ControlRedirect: reconnect to Addr now.
	ControlRedirect ControlKind = 5
	// ControlResync: the server lost continuity of this device's inbox
	// while it was connected; reconnect and resume to learn what is lost.
	ControlResync ControlKind = 6
)

func (k ControlKind) String() string {
	switch k {
	case ControlKick:
		return "kick"
	case ControlDegraded:
		return "degraded"
	case ControlRestored:
		return "restored"
	case ControlDrain:
		return "drain"
	case ControlRedirect:
		return "redirect"
	case ControlResync:
		return "resync"
	}
	return fmt.Sprintf("ControlKind(%d)", uint8(k))
}

// Frame is one decoded protocol frame: a pointer to one of the frame
// structs below.
type Frame interface {
	Type() Type
}

// Hello opens a session. It must be the first frame on a connection.
type Hello struct {
	Token      string
	App        string
	Device     string
	Platform   string   // "ios", "android", "web", "iot", … free-form, for metrics
	Version    string   // client SDK version, free-form
	Businesses []string // businesses multiplexed on this connection
	// Resume cursor: the inbox epoch and the last sequence number the
	// device processed. An empty epoch means a fresh install.
	Epoch string
	Seq   uint64
	Caps  uint64 // Cap* bits offered
	// GroupCursors are the device's positions in the catch-up streams of
	// its groups, at most 64; carried only when not empty (the header's
	// FlagGroupCursors).
	GroupCursors []GroupCursor
}

// GroupCursor is a device's position in a group's catch-up stream: every
// message of the stream's epoch up to Seq reached it (or was not for it).
type GroupCursor struct {
	Group string
	Epoch string
	Seq   uint64
}

// Welcome accepts a session.
type Welcome struct {
	Session   string
	Node      string
	Heartbeat uint64 // milliseconds between client PINGs
	// Recovered is true when every message after the device's resume
	// cursor is still available and will be replayed; false means a gap
	// (trimmed, expired, or the inbox was lost) and the app should resync.
	Recovered bool
	Epoch     string // the inbox epoch to resume with next time
	Acked     uint64 // the server's ack cursor for this device
	MaxFrame  uint64 // largest frame body the server accepts from the device
	Caps      uint64 // Cap* bits accepted
}

// Push carries one message to a device.
type Push struct {
	Seq      uint64 // inbox sequence number; 0 for group and broadcast messages, which are not acked
	ID       string // global message id, the dedupe key
	Business string
	Priority Priority
	Created  uint64 // unix milliseconds when the push API accepted it
	Group    string // group name for group messages, empty otherwise
	Payload  []byte
	// GroupEpoch and GroupSeq are the message's position in its group's
	// catch-up stream, for a group that keeps one; GroupEpoch is empty
	// otherwise, and then neither is encoded (FlagGroupSeq).
	GroupEpoch string
	GroupSeq   uint64
	// Redelivery and Gap are carried in the header's FlagRedelivery and
	// FlagGap bits.
	Redelivery bool
	Gap        bool
}

// Ack acknowledges every inbox message up to and including Seq.
type Ack struct {
	Seq uint64
}

// Ping is a heartbeat; Time is echoed in the Pong.
type Ping struct {
	Time uint64
}

// Pong answers a Ping.
type Pong struct {
	Time uint64
}

// Up is a device-to-business message.
type Up struct {
	Request  uint64 // chosen by the device, echoed in UpReply
	Business string
	Payload  []byte
}

// UpReply answers Up, Join or Leave. Code is CodeOK on success.
type UpReply struct {
	Request uint64
	Code    Code
	Payload []byte
}

// Join subscribes the connection to a group.
type Join struct {
	Request uint64
	Group   string
}

// Leave unsubscribes the connection from a group.
type Leave struct {
	Request uint64
	Group   string
}

// Control tells the device to change behaviour.
type Control struct {
	Kind ControlKind
	// Priority, for ControlDegraded, is the highest priority shed: messages
	// at or below it are not delivered live.
	Priority Priority
	Reason   string
	Addr     string // for ControlDrain and ControlRedirect: where to reconnect
	// Businesses, for ControlDegraded, limits the shedding to these
	// businesses; empty means every business.
	Businesses []string
}

// Error reports a failure. Request is the request id of the frame that
// failed, or 0 when the error concerns the connection.
type Error struct {
	Code    Code
	Request uint64
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (%d): %s", e.Code, e.Code, e.Message)
}

// CatchUp tells a device where a group's catch-up left it, once the
// session became a member of a group that keeps a stream: the messages
// after the device's cursor that the stream still held came before it,
// and Epoch and Seq are the cursor to keep. Recovered is false when the
// stream could not prove that nothing after the cursor was lost (trimmed
// by length or age, or the stream was started anew).
type CatchUp struct {
	Group     string
	Recovered bool
	Epoch     string
	Seq       uint64
}

// Batch holds several complete frames in one. Frames is their concatenated
// encoding (uncompressed; compression is applied by AppendBatch and undone
// by Decode). Use Batch.Each to walk the inner frames.
type Batch struct {
	Frames []byte
}

// Type implementations.
func (*Hello) Type() Type   { return TypeHello }
func (*Welcome) Type() Type { return TypeWelcome }
func (*Push) Type() Type    { return TypePush }
func (*Ack) Type() Type     { return TypeAck }
func (*Ping) Type() Type    { return TypePing }
func (*Pong) Type() Type    { return TypePong }
func (*Up) Type() Type      { return TypeUp }
func (*UpReply) Type() Type { return TypeUpReply }
func (*Join) Type() Type    { return TypeJoin }
func (*Leave) Type() Type   { return TypeLeave }
func (*Control) Type() Type { return TypeControl }
func (*Error) Type() Type   { return TypeError }
func (*Batch) Type() Type   { return TypeBatch }
func (*CatchUp) Type() Type { return TypeCatchUp }
