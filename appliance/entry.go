package appliance

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pushd/pushd/appliance/wire"
)

// A delivery entry is what one node appends to another node's delivery
// stream (streams.Store.Deliver), for that node to apply to its sessions. It is encoded with the wire package's field encoding:
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
// kind 3, fanout: group:str frame:bytes [business:str filter:bytes] — an
// encoded PUSH for every local member of the group key (app/group; app/
// alone is the app's broadcast) that takes the business and that the
// filter (its JSON, empty for none) admits. An entry of an older node
// ends after the frame: no business check, no filter.
//
// kind 4, member: device:str conn_epoch:uvarint group:str via:u8 join:u8
// — the device's session of that connection epoch joins (1) or leaves
// (0) the group key, by way of via (viaDevice, viaUser).
//
// Device strings are inbox keys (app/device). Decoding checks every length
// against the entry, so a corrupt entry is an error, never a panic.
const entryVersion = 1

type entryKind uint8

const (
	entryPush   entryKind = 1
	entryKick   entryKind = 2
	entryFanout entryKind = 3
	entryMember entryKind = 4
)

// deliveryEntry is a decoded delivery entry; which fields are set depends on kind.
type deliveryEntry struct {
	kind entryKind

	// push
	msg     entryMessage
	targets []entryTarget

	// kick, member
	device    string
	connEpoch uint64

	// fanout, member
	group string
	frame []byte
	aud   audience
	via   memberVia
	join  bool
}

type entryMessage struct {
	id       string
	business string
	priority wire.Priority
	created  uint64 // unix ms
	payload  []byte
}

type entryTarget struct {
	device     string // inbox key
	connEpoch  uint64
	inboxEpoch string
	seq        uint64
}

// errEntry marks an undecodable delivery entry.
var errEntry = errors.New("bad delivery entry")

func appendPushEntry(dst []byte, m *entryMessage, targets []entryTarget) []byte {
	dst = append(dst, entryVersion, byte(entryPush))
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

func appendKickEntry(dst []byte, device string, connEpoch uint64) []byte {
	dst = append(dst, entryVersion, byte(entryKick))
	dst = wire.AppendString(dst, device)
	return binary.AppendUvarint(dst, connEpoch)
}

func appendFanoutEntry(dst []byte, group string, frame []byte, aud audience) []byte {
	dst = append(dst, entryVersion, byte(entryFanout))
	dst = wire.AppendString(dst, group)
	dst = wire.AppendBytes(dst, frame)
	dst = wire.AppendString(dst, aud.business)
	return wire.AppendBytes(dst, aud.filter.encoded())
}

func appendMemberEntry(dst []byte, device string, connEpoch uint64, group string, via memberVia, join bool) []byte {
	dst = append(dst, entryVersion, byte(entryMember))
	dst = wire.AppendString(dst, device)
	dst = binary.AppendUvarint(dst, connEpoch)
	dst = wire.AppendString(dst, group)
	j := byte(0)
	if join {
		j = 1
	}
	return append(dst, byte(via), j)
}

func decodeEntry(b []byte) (deliveryEntry, error) {
	var e deliveryEntry
	if len(b) < 2 || b[0] != entryVersion {
		return e, fmt.Errorf("%w: version", errEntry)
	}
	e.kind = entryKind(b[1])
	r := wire.NewFieldReader(b[2:])
	switch e.kind {
	case entryPush:
		e.msg.id = r.Str()
		e.msg.business = r.Str()
		e.msg.priority = wire.Priority(r.Uint8())
		e.msg.created = r.Uvarint()
		e.msg.payload = r.Bytes()
		n := r.Uvarint()
		// A target takes at least four bytes, which bounds the count
		// before anything is allocated for it.
		if n > uint64(len(b))/4 {
			return e, fmt.Errorf("%w: %d targets in %d bytes", errEntry, n, len(b))
		}
		e.targets = make([]entryTarget, 0, n)
		for i := uint64(0); i < n && r.Err() == nil; i++ {
			t := entryTarget{device: r.Str(), connEpoch: r.Uvarint(), inboxEpoch: r.Str(), seq: r.Uvarint()}
			e.targets = append(e.targets, t)
		}
	case entryKick:
		e.device = r.Str()
		e.connEpoch = r.Uvarint()
	case entryFanout:
		e.group = r.Str()
		e.frame = r.Bytes()
		if r.Len() > 0 {
			e.aud.business = r.Str()
			f, err := decodeFilter(r.Bytes())
			if err != nil {
				return e, fmt.Errorf("%w: %v", errEntry, err)
			}
			e.aud.filter = f
		}
	case entryMember:
		e.device = r.Str()
		e.connEpoch = r.Uvarint()
		e.group = r.Str()
		e.via = memberVia(r.Uint8())
		e.join = r.Bool()
		if e.via&^(viaDevice|viaUser) != 0 || e.via == 0 {
			return e, fmt.Errorf("%w: member entry by way of %d", errEntry, e.via)
		}
	default:
		return e, fmt.Errorf("%w: kind %d", errEntry, e.kind)
	}
	if err := r.Err(); err != nil {
		return e, fmt.Errorf("%w: %v", errEntry, err)
	}
	return e, nil
}
