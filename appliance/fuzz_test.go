package appliance

import (
	"bytes"
	"errors"
	"net/http/httptest"
	"testing"
)

// FuzzEntryDecode feeds arbitrary delivery-stream entries to the relay
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

// FuzzPushRequest sends arbitrary bodies to the push API of a node without
// a store: every answer is a JSON answer with a status, never a panic, and
// nothing but a well-formed request reaches delivery.
func FuzzPushRequest(f *testing.F) {
	f.Add([]byte(`{"app":"app1","devices":["d"],"data":"x"}`))
	f.Add([]byte(`{"app":"app1","group":"room","data_base64":"eA==","priority":"high","ttl":5}`))
	f.Add([]byte(`{"app":"app1","broadcast":true,"data":"x","idempotency_key":"k-1"}`))
	f.Add([]byte(`{"app":"app1","devices":[],"data":null}`))
	f.Add([]byte(`[1,2,3]`))
	f.Add([]byte(`{"app":"noapp","app":"app1","devices":["d"],"data":"x"}`))
	f.Add([]byte(`{"app":"app1","devices":["d"],"data":"x","priority":""}`))
	n, err := New(testConfig(), Deps{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", "/v1/push", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		w := httptest.NewRecorder()
		n.servePush(w, req)
		if w.Code == 0 || w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("answer %d with content type %q", w.Code, w.Header().Get("Content-Type"))
		}
	})
}
