package appliance

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzEntryDecode feeds arbitrary delivery-stream entries to the entry
// decoder: it must never panic, and what it accepts must re-encode to an
// entry that decodes the same.
func FuzzEntryDecode(f *testing.F) {
	f.Add(appendPushEntry(nil, &entryMessage{id: "m", business: "b", priority: 2, created: 7, payload: []byte("p")},
		[]entryTarget{{device: "a/d", connEpoch: 3, inboxEpoch: "e", seq: 9}, {device: "a/x", seq: 1}}))
	f.Add(appendKickEntry(nil, "a/d", 5))
	f.Add(appendFanoutEntry(nil, "a/room", []byte{1, 3, 0, 0, 0, 0, 0}))
	f.Add([]byte{entryVersion, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry(b)
		if err != nil {
			if !errors.Is(err, errEntry) {
				t.Fatalf("error %v is not errEntry", err)
			}
			return
		}
		var again []byte
		switch e.kind {
		case entryPush:
			again = appendPushEntry(nil, &e.msg, e.targets)
		case entryKick:
			again = appendKickEntry(nil, e.device, e.connEpoch)
		case entryFanout:
			again = appendFanoutEntry(nil, e.group, e.frame)
		}
		e2, err := decodeEntry(again)
		if err != nil || e2.kind != e.kind || len(e2.targets) != len(e.targets) || e2.device != e.device || !bytes.Equal(e2.frame, e.frame) {
			t.Fatalf("re-encoded entry decodes differently: %+v vs %+v (%v)", e2, e, err)
		}
	})
}
