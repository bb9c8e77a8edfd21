package streams

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// A group's membership is kept twice: in the group's member set, which
// answers how big the group is and who is in it, and in each member's own
// group set (a device's or a user's), which a node reads when a member
// connects, in the same round trip as its route and inbox (OpenMany). The
// two sets live under different hash tags, so no script can change both:
// ChangeMembers changes one and then the other, and says what a retry
// would have to finish when the second step fails.

// MemberChange is one member of a ChangeMembers call.
type MemberChange struct {
	// Name is how the group's member set lists the member: the caller's
	// choice, unique per member ("d:phone-1", "u:alice").
	Name string
	// Key is the member's own id: a device (as Open names it) or a user
	// (as OpenRequest.User names it).
	Key string
	// User says Key is a user; false, a device.
	User bool
}

// MemberStatus says what ChangeMembers did for one member.
type MemberStatus uint8

const (
	// MemberChanged: added, or removed.
	MemberChanged MemberStatus = iota + 1
	// MemberUnchanged: already a member (add), or not one (remove).
	MemberUnchanged
	// MemberGroupFull: not added, the group holds GroupMaxMembers.
	MemberGroupFull
	// MemberTooManyGroups: not added, the member is in MemberMaxGroups
	// groups.
	MemberTooManyGroups
)

// MemberResult answers one MemberChange.
type MemberResult struct {
	Status MemberStatus
	// Route is a device member's route as the change saw it; Devices are
	// a user member's devices seen within UserDeviceTTL. The caller tells
	// the nodes holding their sessions.
	Route   Route
	Devices []string
}

// ChangeMembers adds members to group (add) or removes them, in at most
// three round trips: the group's member set first (members.lua; an add
// past GroupMaxMembers stops there), then each member's own group set
// (member.lua, which also reads where the member's sessions are), then,
// for adds a member refused for being in MemberMaxGroups groups, the
// group's set again to take it back out. On an error some members may be
// changed on one side only; calling again with the same members finishes
// the change, since every step is idempotent.
func (s *Store) ChangeMembers(ctx context.Context, group string, add bool, members []MemberChange) ([]MemberResult, error) {
	if !validID(group) {
		return nil, fmt.Errorf("change members of %q: %w", group, ErrInvalidArgument)
	}
	for _, m := range members {
		if !validID(m.Key) || m.Name == "" {
			return nil, fmt.Errorf("change members of %s: member %q (%q): %w", group, m.Name, m.Key, ErrInvalidArgument)
		}
	}
	if len(members) == 0 {
		return nil, nil
	}
	op := "-"
	if add {
		op = "+"
	}
	args := make([]any, 0, 2+len(members))
	args = append(args, op, s.cfg.GroupMaxMembers)
	for _, m := range members {
		args = append(args, m.Name)
	}
	calls := []scriptCall{{script: membersScript, keys: []string{groupMembersKey(group)}, args: args}}
	if err := s.runScripts(ctx, calls); err != nil {
		return nil, wrap("change members", groupMembersKey(group), err)
	}
	side, err := calls[0].cmd.Int64Slice()
	if err == nil && len(side) != len(members) {
		err = fmt.Errorf("reply has %d elements, want %d", len(side), len(members))
	}
	if err != nil {
		return nil, fmt.Errorf("change members %s: %w", groupMembersKey(group), err)
	}
	out := make([]MemberResult, len(members))
	since := time.Now().Add(-s.cfg.UserDeviceTTL).UnixMilli()
	calls = calls[:0]
	at := make([]int, 0, len(members))
	for i, m := range members {
		if side[i] < 0 {
			out[i].Status = MemberGroupFull
			continue
		}
		keys := []string{deviceGroupsKey(m.Key), routeKey(m.Key)}
		kind := "d"
		if m.User {
			keys, kind = []string{userGroupsKey(m.Key), userDevicesKey(m.Key)}, "u"
		}
		calls = append(calls, scriptCall{script: memberScript, keys: keys,
			args: []any{op, group, s.cfg.MemberMaxGroups, kind, since}})
		at = append(at, i)
	}
	if len(calls) == 0 {
		return out, nil
	}
	if err := s.runScripts(ctx, calls); err != nil {
		return nil, wrap("change members of "+group+":", fmt.Sprintf("%d members' groups", len(calls)), err)
	}
	var undo []any
	for k, c := range calls {
		i := at[k]
		v, err := c.cmd.Slice()
		if err == nil && len(v) < 1 {
			err = fmt.Errorf("empty reply")
		}
		if err != nil {
			return nil, fmt.Errorf("change members of %s: %s: %w", group, members[i].Key, err)
		}
		r := &out[i]
		switch num(v[0]) {
		case 1:
			r.Status = MemberChanged
		case 0:
			r.Status = MemberUnchanged
		default:
			r.Status = MemberTooManyGroups
			if side[i] == 1 {
				undo = append(undo, members[i].Name)
			}
			continue
		}
		if members[i].User {
			for _, d := range v[1:] {
				r.Devices = append(r.Devices, str(d))
			}
		} else if len(v) == 3 {
			r.Route = Route{Node: str(v[1]), Epoch: unum(v[2])}
		}
	}
	if len(undo) > 0 {
		calls = []scriptCall{{script: membersScript, keys: []string{groupMembersKey(group)},
			args: append([]any{"-", s.cfg.GroupMaxMembers}, undo...)}}
		if err := s.runScripts(ctx, calls); err != nil {
			return nil, wrap("change members: take back refused members of", groupMembersKey(group), err)
		}
	}
	return out, nil
}

// GroupInfo is what the store holds about a group.
type GroupInfo struct {
	Size    int64    // members
	Members []string // a page of them, as ChangeMembers named them
	// Next is the cursor of the next page; 0 when this was the last.
	Next   uint64
	Stream GroupStream
}

// GroupStream describes a group's catch-up stream; MaxLen 0 means the
// group keeps none.
type GroupStream struct {
	MaxLen  int64
	MaxAge  time.Duration
	Epoch   string
	Last    uint64 // the last seq appended
	Trimmed uint64 // every seq up to it is gone (length or age)
}

// Group reads a group's size, a page of about count members from cursor
// (0 for the first page: Redis SSCAN, so a page may be a little larger
// or smaller, and a member added or removed meanwhile may be listed or
// not), and its stream's settings.
func (s *Store) Group(ctx context.Context, group string, cursor uint64, count int) (GroupInfo, error) {
	if !validID(group) {
		return GroupInfo{}, fmt.Errorf("group %q: %w", group, ErrInvalidArgument)
	}
	pipe := s.rdb.Pipeline()
	size := pipe.SCard(ctx, groupMembersKey(group))
	scan := pipe.SScan(ctx, groupMembersKey(group), cursor, "", int64(count))
	meta := pipe.HMGet(ctx, groupMetaKey(group), "n", "a", "e", "l", "t")
	if _, err := pipe.Exec(ctx); err != nil {
		return GroupInfo{}, wrap("group", groupMembersKey(group), err)
	}
	members, next := scan.Val()
	return GroupInfo{Size: size.Val(), Members: members, Next: next, Stream: parseGroupMeta(meta.Val())}, nil
}

// parseGroupMeta decodes the n, a, e, l, t fields of a stream's meta.
func parseGroupMeta(v []any) GroupStream {
	g := GroupStream{MaxLen: num(v[0]), MaxAge: time.Duration(num(v[1])) * time.Millisecond, Epoch: str(v[2]),
		Last: unum(v[3]), Trimmed: unum(v[4])}
	if g.MaxLen <= 0 || g.Epoch == "" {
		return GroupStream{}
	}
	return g
}

// SetGroupStream makes group keep a catch-up stream of at most maxLen
// messages, each kept at most maxAge, or none when maxLen is 0 (which
// deletes the stream and its epoch). Changing the bounds keeps the
// stream; a lowered maxLen trims it at once.
func (s *Store) SetGroupStream(ctx context.Context, group string, maxLen int64, maxAge time.Duration) (GroupStream, error) {
	if !validID(group) || maxLen < 0 || (maxLen > 0 && maxAge < time.Millisecond) {
		return GroupStream{}, fmt.Errorf("group stream of %q: %d entries for %s: %w", group, maxLen, maxAge, ErrInvalidArgument)
	}
	calls := []scriptCall{{script: gstreamScript, keys: []string{groupMetaKey(group), groupStreamKey(group)},
		args: []any{maxLen, maxAge.Milliseconds(), newToken()}}}
	if err := s.runScripts(ctx, calls); err != nil {
		return GroupStream{}, wrap("group stream", groupMetaKey(group), err)
	}
	v, err := calls[0].cmd.Slice()
	if err == nil && len(v) != 3 {
		err = fmt.Errorf("reply has %d elements, want 3", len(v))
	}
	if err != nil {
		return GroupStream{}, fmt.Errorf("group stream %s: %w", groupMetaKey(group), err)
	}
	if maxLen == 0 {
		return GroupStream{}, nil
	}
	return GroupStream{MaxLen: maxLen, MaxAge: maxAge, Epoch: str(v[0]), Last: unum(v[1]), Trimmed: unum(v[2])}, nil
}

// GroupMessage is what AppendGroup stores in a group's stream.
type GroupMessage struct {
	ID       string
	Business string
	Priority Priority
	Created  time.Time
	Payload  []byte
	// Filter is the caller's encoding of who among the members the
	// message is for, stored with it and handed back by ReadGroups.
	Filter []byte
}

// GroupEntry is one entry of a group's stream as read back.
type GroupEntry struct {
	Seq      uint64
	ID       string
	Business string
	Priority Priority
	Created  time.Time
	Payload  []byte
	Filter   []byte
}

// AppendGroup appends msg once to group's catch-up stream and returns
// its position, or an empty epoch when the group keeps no stream.
func (s *Store) AppendGroup(ctx context.Context, group string, msg GroupMessage) (epoch string, seq uint64, err error) {
	if !validID(group) || !validID(msg.ID) {
		return "", 0, fmt.Errorf("append to group %q: message %q: %w", group, msg.ID, ErrInvalidArgument)
	}
	created := msg.Created
	if created.IsZero() {
		created = time.Now()
	}
	calls := []scriptCall{{script: gappendScript, keys: []string{groupMetaKey(group), groupStreamKey(group)},
		args: []any{msg.ID, msg.Business, int64(msg.Priority), created.UnixMilli(), msg.Payload, msg.Filter,
			time.Now().UnixMilli(), newToken()}}}
	if err := s.runScripts(ctx, calls); err != nil {
		return "", 0, wrap("append "+msg.ID+" to group", groupStreamKey(group), err)
	}
	v, err := calls[0].cmd.Slice()
	if err == nil && len(v) != 2 {
		err = fmt.Errorf("reply has %d elements, want 2", len(v))
	}
	if err != nil {
		return "", 0, fmt.Errorf("append %s to group %s: %w", msg.ID, groupStreamKey(group), err)
	}
	return str(v[0]), unum(v[1]), nil
}

// GroupRead asks ReadGroups for a member's catch-up in one group: the
// entries after its cursor (Epoch "" for a member without one).
type GroupRead struct {
	Group string
	Epoch string
	After uint64
	Limit int // at most this many entries; <= 0 means 100
}

// GroupReadResult answers one GroupRead.
type GroupReadResult struct {
	// On is false when the group keeps no stream; nothing else is set.
	On    bool
	Epoch string
	Last  uint64
	// Recovered is true when no entry after the cursor up to Upto is
	// missing from Entries. One trimmed (by length or age), expired
	// unread (older than the stream's max age) or lost with the stream
	// makes it false; so does a cursor of another epoch, or past Last. A
	// member without a cursor is recovered: it has nothing to lose.
	Recovered bool
	Entries   []GroupEntry
	// Upto is the seq the read covers: the cursor to read on from (with
	// Epoch) when More, else the cursor to keep.
	Upto uint64
	More bool
}

// ReadGroups reads many members' catch-ups in one pipeline (gread.lua,
// one call per read). It changes nothing.
func (s *Store) ReadGroups(ctx context.Context, reads []GroupRead) ([]GroupReadResult, error) {
	if len(reads) == 0 {
		return nil, nil
	}
	now := time.Now().UnixMilli()
	calls := make([]scriptCall, len(reads))
	for i, r := range reads {
		if !validID(r.Group) {
			return nil, fmt.Errorf("read group %q: %w", r.Group, ErrInvalidArgument)
		}
		limit := r.Limit
		if limit <= 0 {
			limit = 100
		}
		calls[i] = scriptCall{script: greadScript, keys: []string{groupMetaKey(r.Group), groupStreamKey(r.Group)},
			args: []any{r.Epoch, r.After, limit, now}}
	}
	if err := s.runScripts(ctx, calls); err != nil {
		return nil, wrap("read groups", fmt.Sprintf("%d reads", len(reads)), err)
	}
	out := make([]GroupReadResult, len(reads))
	for i, c := range calls {
		v, err := c.cmd.Slice()
		if err == nil && len(v) != 1 && len(v) != 7 {
			err = fmt.Errorf("reply has %d elements", len(v))
		}
		if err != nil {
			return nil, fmt.Errorf("read group %s: %w", groupStreamKey(reads[i].Group), err)
		}
		if num(v[0]) == 0 {
			continue
		}
		r := GroupReadResult{On: true, Epoch: str(v[1]), Last: unum(v[2]), Recovered: num(v[3]) == 1, Upto: unum(v[5])}
		rows, ok := v[4].([]any)
		if !ok {
			return nil, fmt.Errorf("read group %s: entries: unexpected reply %T", groupStreamKey(reads[i].Group), v[4])
		}
		if r.Entries, err = parseGroupEntries(rows); err != nil {
			return nil, fmt.Errorf("read group %s: %w", groupStreamKey(reads[i].Group), err)
		}
		r.More = num(v[6]) == 1
		out[i] = r
	}
	return out, nil
}

// parseGroupEntries decodes gread.lua's {{"0-<seq>", {field, value,
// ...}}, ...}.
func parseGroupEntries(rows []any) ([]GroupEntry, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	out := make([]GroupEntry, len(rows))
	for i, row := range rows {
		r, ok := row.([]any)
		if !ok || len(r) != 2 {
			return nil, fmt.Errorf("entry %d: unexpected reply %v", i, row)
		}
		id := str(r[0])
		seq, err := strconv.ParseUint(id[min(2, len(id)):], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("entry id %q: %w", id, err)
		}
		fields, ok := r[1].([]any)
		if !ok || len(fields)%2 != 0 {
			return nil, fmt.Errorf("entry %s: unexpected fields %v", id, r[1])
		}
		e := GroupEntry{Seq: seq}
		for j := 0; j < len(fields); j += 2 {
			val := str(fields[j+1])
			switch str(fields[j]) {
			case "i":
				e.ID = val
			case "b":
				e.Business = val
			case "p":
				p, _ := strconv.ParseUint(val, 10, 8)
				e.Priority = Priority(p)
			case "c":
				e.Created = parseMillis(val)
			case "d":
				e.Payload = []byte(val)
			case "f":
				if val != "" {
					e.Filter = []byte(val)
				}
			}
		}
		out[i] = e
	}
	return out, nil
}
