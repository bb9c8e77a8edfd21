package streams

import (
	"context"
	"fmt"
	"time"
)

// onceKey marks a name as seen (MarkOnce). It carries the name as its
// own hash tag: one key, one slot.
func onceKey(name string) string { return "pushd:once:{" + name + "}" }

// MarkOnce records name for ttl and reports whether it was new: the first
// call for a name gets true, every later one false until the mark
// expires. It is one SET NX PX, so racing callers (nodes of the region
// consuming a record twice) agree on a single first. A call that failed
// with ErrUnavailable may have set the mark; the caller retries and is
// then told false, so a retry decides "done" for a message that perhaps
// was not: use it only where at most once is the promise (the bridge's
// group and broadcast imports, docs/delivery.md). name must be a valid
// id and ttl at least a millisecond.
func (s *Store) MarkOnce(ctx context.Context, name string, ttl time.Duration) (bool, error) {
	if !validID(name) || ttl < time.Millisecond {
		return false, fmt.Errorf("mark once %q for %s: %w", name, ttl, ErrInvalidArgument)
	}
	ok, err := s.rdb.SetNX(ctx, onceKey(name), "1", ttl).Result()
	if err != nil {
		return false, wrap("mark once", onceKey(name), err)
	}
	return ok, nil
}
