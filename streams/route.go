package streams

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Route names the node holding a device's connection and the connection
// epoch it claimed. Node == "" means the device is offline (no route, or
// released); Epoch is then the last epoch claimed, if any.
type Route struct {
	Node  string
	Epoch uint64
}

// ClaimRoute makes node the owner of device's route under a new connection
// epoch, larger than any the device had before (even after the route key
// expired), sets the route's TTL to RouteTTL, and returns the epoch and the
// previous route so the caller can kick that connection. A call retried by
// go-redis after a timeout returns the first call's answer.
func (s *Store) ClaimRoute(ctx context.Context, device, node string) (epoch uint64, prev Route, err error) {
	if !validID(device) || !validID(node) {
		return 0, Route{}, fmt.Errorf("claim route %q for node %q: %w", device, node, ErrInvalidArgument)
	}
	calls := []scriptCall{{
		script: claimScript,
		keys:   []string{routeKey(device)},
		args:   []any{node, s.cfg.RouteTTL.Milliseconds(), newToken()},
	}}
	if err := s.runScripts(ctx, calls); err != nil {
		return 0, Route{}, wrap("claim route", routeKey(device), err)
	}
	v, err := calls[0].cmd.Slice()
	if err == nil && len(v) != 3 {
		err = fmt.Errorf("reply has %d elements, want 3", len(v))
	}
	if err != nil {
		return 0, Route{}, fmt.Errorf("claim route %s: %w", routeKey(device), err)
	}
	return unum(v[0]), Route{Node: str(v[1]), Epoch: unum(v[2])}, nil
}

// ReleaseRoute clears device's route only if it still names r (compare and
// delete), so a node that lost the route can never clear the new owner's. It
// keeps the epoch, so the next claim still gets a larger one, and reports
// whether it released.
func (s *Store) ReleaseRoute(ctx context.Context, device string, r Route) (bool, error) {
	if !validID(device) || !validID(r.Node) {
		return false, fmt.Errorf("release route %q for node %q: %w", device, r.Node, ErrInvalidArgument)
	}
	calls := []scriptCall{{
		script: releaseScript,
		keys:   []string{routeKey(device)},
		args:   []any{r.Node, strconv.FormatUint(r.Epoch, 10)},
	}}
	if err := s.runScripts(ctx, calls); err != nil {
		return false, wrap("release route", routeKey(device), err)
	}
	n, err := calls[0].cmd.Int64()
	if err != nil {
		return false, fmt.Errorf("release route %s: %w", routeKey(device), err)
	}
	return n == 1, nil
}

// Routes reads many devices' routes in one pipeline.
func (s *Store) Routes(ctx context.Context, devices []string) ([]Route, error) {
	if err := checkIDs("routes: device", devices); err != nil {
		return nil, err
	}
	if len(devices) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(devices))
	for i, d := range devices {
		cmds[i] = pipe.HMGet(ctx, routeKey(d), "n", "e")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, wrap("routes", fmt.Sprintf("of %d devices", len(devices)), err)
	}
	out := make([]Route, len(devices))
	for i, c := range cmds {
		v := c.Val()
		out[i] = Route{Node: str(v[0]), Epoch: unum(v[1])}
	}
	return out, nil
}

// RefreshRoutes renews the TTL of each devices[i]'s route if it still names
// routes[i] (compare and PEXPIRE), in one pipeline. A route that moved to
// another owner is left alone.
func (s *Store) RefreshRoutes(ctx context.Context, devices []string, routes []Route) error {
	if len(devices) != len(routes) {
		return fmt.Errorf("refresh routes: %d devices but %d routes: %w", len(devices), len(routes), ErrInvalidArgument)
	}
	if err := checkIDs("refresh routes: device", devices); err != nil {
		return err
	}
	if len(devices) == 0 {
		return nil
	}
	ttl := s.cfg.RouteTTL.Milliseconds()
	calls := make([]scriptCall, len(devices))
	for i, d := range devices {
		calls[i] = scriptCall{
			script: refreshScript,
			keys:   []string{routeKey(d)},
			args:   []any{routes[i].Node, strconv.FormatUint(routes[i].Epoch, 10), ttl},
		}
	}
	return wrap("refresh routes", fmt.Sprintf("of %d devices", len(devices)), s.runScripts(ctx, calls))
}
