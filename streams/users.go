package streams

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// A user is known to the store through its devices' handshakes: OpenMany
// records each device that connects as a user in the user's index (a
// sorted set scored by the last handshake), within UserDeviceTTL and
// UserMaxDevices, and records the user in the device's inbox meta.

// UserDevices resolves users to the devices a push to them reaches, in
// two round trips whatever the number of users: the devices of each
// user's index seen within UserDeviceTTL, then each device's current user
// (its inbox meta), so a device that connected as another user since
// then is left out (and dropped from the old index here, best effort).
// A device whose meta is gone (no handshake or push for InboxTTL) is
// kept: its index entry is the last word on it. out[i] are users[i]'s
// devices, least recently seen first.
func (s *Store) UserDevices(ctx context.Context, users []string) ([][]string, error) {
	if err := checkIDs("user devices: user", users); err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, nil
	}
	since := strconv.FormatInt(time.Now().Add(-s.cfg.UserDeviceTTL).UnixMilli(), 10)
	pipe := s.rdb.Pipeline()
	lists := make([]*redis.StringSliceCmd, len(users))
	for i, u := range users {
		lists[i] = pipe.ZRangeByScore(ctx, userDevicesKey(u), &redis.ZRangeBy{Min: since, Max: "+inf"})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, wrap("user devices", fmt.Sprintf("of %d users", len(users)), err)
	}
	type check struct {
		user, device int
		cmd          *redis.StringCmd
	}
	out := make([][]string, len(users))
	var checks []check
	pipe = s.rdb.Pipeline()
	for i, c := range lists {
		out[i] = c.Val()
		for j, d := range out[i] {
			if !validID(d) {
				continue // not written by OpenMany; never a key to build
			}
			checks = append(checks, check{user: i, device: j, cmd: pipe.HGet(ctx, metaKey(d), "u")})
		}
	}
	if len(checks) == 0 {
		return out, nil
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, wrap("user devices: current user", fmt.Sprintf("of %d devices", len(checks)), err)
	}
	gone := make([][]bool, len(users))
	stale := s.rdb.Pipeline()
	for _, c := range checks {
		u, err := c.cmd.Result()
		if err == redis.Nil || (err == nil && u == users[c.user]) {
			continue
		}
		if err != nil {
			return nil, wrap("user devices: current user", metaKey(out[c.user][c.device]), err)
		}
		if gone[c.user] == nil {
			gone[c.user] = make([]bool, len(out[c.user]))
		}
		gone[c.user][c.device] = true
		stale.ZRem(ctx, userDevicesKey(users[c.user]), out[c.user][c.device])
	}
	for i, g := range gone {
		if g == nil {
			continue
		}
		kept := out[i][:0]
		for j, d := range out[i] {
			if !g[j] {
				kept = append(kept, d)
			}
		}
		out[i] = kept
	}
	if stale.Len() > 0 {
		_, _ = stale.Exec(ctx)
	}
	return out, nil
}

// UserDevice is one device of a user's index.
type UserDevice struct {
	Device   string
	LastSeen time.Time // its last handshake as the user
}

// UserInfo is what the store holds about a user.
type UserInfo struct {
	// Devices are the devices a push to the user reaches (UserDevices'
	// answer), least recently seen first.
	Devices []UserDevice
	// Groups are the user's groups (ChangeMembers).
	Groups []string
}

// User reads one user's devices and groups.
func (s *Store) User(ctx context.Context, user string) (UserInfo, error) {
	if !validID(user) {
		return UserInfo{}, fmt.Errorf("user %q: %w", user, ErrInvalidArgument)
	}
	devices, err := s.UserDevices(ctx, []string{user})
	if err != nil {
		return UserInfo{}, err
	}
	pipe := s.rdb.Pipeline()
	scores := make([]*redis.FloatCmd, len(devices[0]))
	for i, d := range devices[0] {
		scores[i] = pipe.ZScore(ctx, userDevicesKey(user), d)
	}
	groups := pipe.SMembers(ctx, userGroupsKey(user))
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return UserInfo{}, wrap("user", userDevicesKey(user), err)
	}
	var info UserInfo
	for i, d := range devices[0] {
		if ms, err := scores[i].Result(); err == nil {
			info.Devices = append(info.Devices, UserDevice{Device: d, LastSeen: time.UnixMilli(int64(ms))})
		}
	}
	if g := groups.Val(); len(g) > 0 {
		info.Groups = g
	}
	return info, nil
}
