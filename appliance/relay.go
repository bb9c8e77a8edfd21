package appliance

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pushd/pushd/appliance/wire"
)

// A relay entry is what one node appends to another node's delivery
// stream. It is encoded with the wire package's field encoding:
//
//	version:u8 (1) kind:u8 body
//
// kind 1, push: the message once, then its targets on that node:
//
//	id:str business:str priority:u8 created_ms:uvarint payload:bytes
//	count:uvarint { device:str conn_epoch:uvarint inbox_epoch:str seq:uvarint }*
//
// kind 2, kick: device:str conn_epoch:uvarint — close sessions of the
// device older than conn_epoch (another node took its route).
//
// kind 3, fanout: group:str frame:bytes — an encoded PUSH for every local
// member of the group key (app/group; app/ alone is the app's broadcast).
//
// Device strings are inbox keys (app/device). Decoding checks every length
// against the entry, so a corrupt entry is an error, never a panic.
const relayVersion = 1

type relayKind uint8

const (
	relayPush   relayKind = 1
	relayKick   relayKind = 2
	relayFanout relayKind = 3
)

// relayEntry is a decoded relay entry; which fields are set depends on kind.
type relayEntry struct {
	kind relayKind

	// push
	msg     relayMessage
	targets []relayTarget

	// kick
	device    string
	connEpoch uint64

	// fanout
	group string
	frame []byte
}

type relayMessage struct {
	id       string
	business string
	priority wire.Priority
	created  uint64 // unix ms
	payload  []byte
}

type relayTarget struct {
	device     string // inbox key
	connEpoch  uint64
	inboxEpoch string
	seq        uint64
}

// errRelay marks an undecodable relay entry.
var errRelay = errors.New("bad relay entry")

func appendRelayPush(dst []byte, m *relayMessage, targets []relayTarget) []byte {
	dst = append(dst, relayVersion, byte(relayPush))
	dst = wire.AppendString(dst, m.id)
	dst = wire.AppendString(dst, m.business)
	dst = append(dst, byte(m.priority))
	dst = binary.AppendUvarint(dst, m.created)
	dst = wire.AppendBytes(dst, m.payload)
	dst = binary.AppendUvarint(dst, uint64(len(targets)))
	for _, t := range targets {
		dst = wire.AppendString(dst, t.device)
		dst = binary.AppendUvarint(dst, t.connEpoch)
		dst = wire.AppendString(dst, t.inboxEpoch)
		dst = binary.AppendUvarint(dst, t.seq)
	}
	return dst
}

func appendRelayKick(dst []byte, device string, connEpoch uint64) []byte {
	dst = append(dst, relayVersion, byte(relayKick))
	dst = wire.AppendString(dst, device)
	return binary.AppendUvarint(dst, connEpoch)
}

func appendRelayFanout(dst []byte, group string, frame []byte) []byte {
	dst = append(dst, relayVersion, byte(relayFanout))
	dst = wire.AppendString(dst, group)
	return wire.AppendBytes(dst, frame)
}

func decodeRelay(b []byte) (relayEntry, error) {
	var e relayEntry
	if len(b) < 2 || b[0] != relayVersion {
		return e, fmt.Errorf("%w: version", errRelay)
	}
	e.kind = relayKind(b[1])
	r := wire.NewFieldReader(b[2:])
	switch e.kind {
	case relayPush:
		e.msg.id = r.Str()
		e.msg.business = r.Str()
		e.msg.priority = wire.Priority(r.Uint8())
		e.msg.created = r.Uvarint()
		e.msg.payload = r.Bytes()
		n := r.Uvarint()
		// A target takes at least four bytes, which bounds the count
		// before anything is allocated for it.
		if n > uint64(len(b))/4 {
			return e, fmt.Errorf("%w: %d targets in %d bytes", errRelay, n, len(b))
		}
		e.targets = make([]relayTarget, 0, n)
		for i := uint64(0); i < n && r.Err() == nil; i++ {
			t := relayTarget{device: r.Str(), connEpoch: r.Uvarint(), inboxEpoch: r.Str(), seq: r.Uvarint()}
			e.targets = append(e.targets, t)
		}
	case relayKick:
		e.device = r.Str()
		e.connEpoch = r.Uvarint()
	case relayFanout:
		e.group = r.Str()
		e.frame = r.Bytes()
	default:
		return e, fmt.Errorf("%w: kind %d", errRelay, e.kind)
	}
	if err := r.Err(); err != nil {
		return e, fmt.Errorf("%w: %v", errRelay, err)
	}
	return e, nil
}
