package streams

import (
	"context"
	"fmt"
	"time"
)

// Open is what a connecting device needs: it claims device's route for
// node and resumes the device's inbox from pos, with the results and
// semantics of ClaimRoute(ctx, device, node) followed by Resume(ctx, device,
// pos, limit), but in one round trip instead of two. The two scripts go in
// one pipeline, claim first; each touches only keys of the device's own
// {device} hash tag, and they share none, so neither result depends on the
// other. OpenMany does the same for many devices at once, and also keeps
// the user index and reads the devices' groups.
//
// Errors, in order:
//
//   - An invalid device or node id: nothing is sent (ErrInvalidArgument),
//     and epoch is 0.
//   - The claim failed: epoch is 0 and err says so. As with ClaimRoute, a
//     claim that failed with ErrUnavailable may still have been applied;
//     such a route names node under an epoch the caller never learns, and
//     it expires after RouteTTL unless the device is claimed again.
//   - The claim succeeded but the resume failed, or fewer than
//     Config.WaitReplicas replicas confirmed what it read
//     (ErrNotReplicated): Open returns the claimed epoch and prev together
//     with the error. The route then names node under epoch, and the
//     caller must release it (ReleaseRoute with Route{Node: node, Epoch:
//     epoch}) unless it retries the connection.
//
// The resume script runs even when the claim fails. Like a Resume whose
// reply was lost, it changes only what a later Resume from the same
// position finds the same way (the inbox's TTLs, a new epoch or lost seq),
// so a retried Open reaches the same verdict.
func (s *Store) Open(ctx context.Context, device, node string, pos Position, limit int) (epoch uint64, prev Route, res Resumed, err error) {
	o := s.open(ctx, []OpenRequest{{Device: device, Node: node, Pos: pos, Limit: limit}}, false)[0]
	return o.Epoch, o.Prev, o.Resumed, o.Err
}

// OpenRequest is one connecting device for OpenMany.
type OpenRequest struct {
	Device, Node string
	Pos          Position
	Limit        int // entries to resume; <= 0 means InboxMaxLen
	// User is the user the device connects as ("" for none). The device
	// is recorded under it: its user index entry is refreshed (see
	// UserDeviceTTL, UserMaxDevices), the user's groups are read, and a
	// device that belonged to another user leaves that user's index.
	User string
}

// Opened answers one OpenRequest: Open's results, the groups of the
// device and of its user, and the request's own error (Open's errors, in
// Open's order).
type Opened struct {
	Epoch      uint64
	Prev       Route
	Resumed    Resumed
	Groups     []string // the device's groups (ChangeMembers)
	UserGroups []string // the user's groups; nil without a user
	Err        error
}

// OpenMany opens many connecting devices in one pipeline: per device the
// claim and the resume of Open, the device's groups read by the resume
// script, and with a user the user index script (user.lua). Devices that
// moved to another user are then removed from the old user's index in a
// second round trip, which only such a move costs; a failure there is
// not reported (a push to the old user checks each device's current user
// anyway, see UserDevices). Results are in the order of reqs.
func (s *Store) OpenMany(ctx context.Context, reqs []OpenRequest) []Opened {
	return s.open(ctx, reqs, true)
}

func (s *Store) open(ctx context.Context, reqs []OpenRequest, session bool) []Opened {
	out := make([]Opened, len(reqs))
	calls := make([]scriptCall, 0, 3*len(reqs))
	at := make([]int, len(reqs)) // reqs[i]'s first call; -1 when invalid
	now := time.Now().UnixMilli()
	for i, r := range reqs {
		if !validID(r.Device) || !validID(r.Node) || (r.User != "" && !validID(r.User)) {
			out[i].Err = fmt.Errorf("open %q for node %q as user %q: %w", r.Device, r.Node, r.User, ErrInvalidArgument)
			at[i] = -1
			continue
		}
		at[i] = len(calls)
		calls = append(calls, s.claimCall(r.Device, r.Node), s.resumeCall(r.Device, r.Pos, r.Limit, session, r.User))
		if session && r.User != "" {
			calls = append(calls, scriptCall{script: userScript,
				keys: []string{userDevicesKey(r.User), userGroupsKey(r.User)},
				args: []any{r.Device, now, s.cfg.UserDeviceTTL.Milliseconds(), s.cfg.UserMaxDevices}})
		}
	}
	if len(calls) == 0 {
		return out
	}
	// runReplicated reports the first failed call; each request's calls
	// are told apart below, since a failed resume must still return the
	// claimed epoch. With replicas to wait for, any error may also be the
	// replicas' shortfall, which no request's own calls show.
	unconfirmed := s.runReplicated(ctx, calls)
	moved := map[string][]string{} // old user → devices that left it
	for i, r := range reqs {
		if at[i] < 0 {
			continue
		}
		o := &out[i]
		claim, resume := calls[at[i]].cmd, calls[at[i]+1].cmd
		if err := claim.Err(); err != nil {
			o.Err = wrap("open: claim route", routeKey(r.Device), err)
			continue
		}
		var err error
		if o.Epoch, o.Prev, err = parseClaim(claim); err != nil {
			o.Epoch, o.Prev, o.Err = 0, Route{}, fmt.Errorf("open: claim route %s: %w", routeKey(r.Device), err)
			continue
		}
		if err := resume.Err(); err != nil {
			o.Err = wrap("open: resume", inboxKey(r.Device), err)
			continue
		}
		if unconfirmed != nil && s.cfg.WaitReplicas > 0 {
			// What the resume read may be lost in a failover: the caller
			// must not send it, and releases the claimed route.
			o.Err = wrap("open: resume", inboxKey(r.Device), unconfirmed)
			continue
		}
		var prevUser string
		if o.Resumed, prevUser, o.Groups, err = parseResume(resume); err != nil {
			o.Err = fmt.Errorf("open: resume %s: %w", inboxKey(r.Device), err)
			continue
		}
		if session && r.User != "" {
			c := calls[at[i]+2].cmd
			if err := c.Err(); err != nil {
				o.Err = wrap("open: user index", userDevicesKey(r.User), err)
				continue
			}
			if o.UserGroups, err = strs(c.Val()); err != nil {
				o.Err = fmt.Errorf("open: user index %s: %w", userDevicesKey(r.User), err)
				continue
			}
		}
		if session && prevUser != "" && prevUser != r.User {
			moved[prevUser] = append(moved[prevUser], r.Device)
		}
	}
	if len(moved) > 0 {
		pipe := s.rdb.Pipeline()
		for user, devices := range moved {
			members := make([]any, len(devices))
			for i, d := range devices {
				members[i] = d
			}
			pipe.ZRem(ctx, userDevicesKey(user), members...)
		}
		_, _ = pipe.Exec(ctx)
	}
	return out
}
