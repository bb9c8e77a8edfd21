package appliance

import (
	"bytes"
	"errors"
	"testing"

	"github.com/pushd/pushd/appliance/api"
)

// FuzzEntryDecode feeds arbitrary delivery-stream entries to the entry
// decoder: it must never panic, and what it accepts must re-encode to an
// entry that decodes the same.
func FuzzEntryDecode(f *testing.F) {
	f.Add(appendPushEntry(nil, &entryMessage{id: "m", business: "b", priority: 2, created: 7, payload: []byte("p")},
		[]entryTarget{{device: "a/d", connEpoch: 3, inboxEpoch: "e", seq: 9}, {device: "a/x", seq: 1}}))
	f.Add(appendKickEntry(nil, "a/d", 5))
	f.Add(appendFanoutEntry(nil, "a/room", []byte{1, 3, 0, 0, 0, 0, 0}, audience{}))
	filter, err := ParseFilter(&api.Filter{Platforms: []string{"ios"}, Versions: []api.VersionMatch{{Prefix: api.Ptr("2.")}}, Tags: []string{"vip"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(appendFanoutEntry(nil, "a/room", []byte{1, 3, 0, 0, 0, 0, 0}, audience{business: "news", filter: filter}))
	// An older node's fanout entry ends after the frame.
	f.Add(append([]byte{entryVersion, byte(entryFanout)}, 6, 'a', '/', 'r', 'o', 'o', 'm', 0))
	f.Add(appendMemberEntry(nil, "a/d", 4, "a/room", viaUser, true))
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
			again = appendFanoutEntry(nil, e.group, e.frame, e.aud)
		case entryMember:
			again = appendMemberEntry(nil, e.device, e.connEpoch, e.group, e.via, e.join)
		}
		e2, err := decodeEntry(again)
		if err != nil || e2.kind != e.kind || len(e2.targets) != len(e.targets) || e2.device != e.device || !bytes.Equal(e2.frame, e.frame) ||
			e2.aud.business != e.aud.business || !bytes.Equal(e2.aud.filter.encoded(), e.aud.filter.encoded()) ||
			e2.group != e.group || e2.via != e.via || e2.join != e.join || e2.connEpoch != e.connEpoch {
			t.Fatalf("re-encoded entry decodes differently: %+v vs %+v (%v)", e2, e, err)
		}
	})
}
