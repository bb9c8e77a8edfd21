package client

// idWindow remembers the last n message ids: a set for lookup and a ring
// for eviction in arrival order.
type idWindow struct {
	set  map[string]struct{}
	ring []string
	next int
}

func newIDWindow(n int) *idWindow {
	return &idWindow{set: make(map[string]struct{}, n), ring: make([]string, n)}
}

// add records id and reports false when it was already in the window. An
// empty id names no message, so it is never a repeat and is not recorded.
func (w *idWindow) add(id string) bool {
	if id == "" {
		return true
	}
	if _, seen := w.set[id]; seen {
		return false
	}
	if old := w.ring[w.next]; old != "" {
		delete(w.set, old)
	}
	w.ring[w.next] = id
	w.next = (w.next + 1) % len(w.ring)
	w.set[id] = struct{}{}
	return true
}
