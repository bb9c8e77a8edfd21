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
// go-redis after a timeout returns the first call's answer. A device that
// connects and resumes at once should use Open, which does both in one
// round trip.
func (s *Store) ClaimRoute(ctx context.Context, device, node string) (epoch uint64, prev Route, err error) {
	if !validID(device) || !validID(node) {
		return 0, Route{}, fmt.Errorf("claim route %q for node %q: %w", device, node, ErrInvalidArgument)
	}
	calls := []scriptCall{s.claimCall(device, node)}
	if err := s.runScripts(ctx, calls); err != nil {
		return 0, Route{}, wrap("claim route", routeKey(device), err)
	}
	epoch, prev, err = parseClaim(calls[0].cmd)
	if err != nil {
		return 0, Route{}, fmt.Errorf("claim route %s: %w", routeKey(device), err)
	}
	return epoch, prev, nil
}

// claimCall is the claim.lua call that makes node the owner of device's
// route, with a fresh claim token.
func (s *Store) claimCall(device, node string) scriptCall {
	return scriptCall{
		script: claimScript,
		keys:   []string{routeKey(device)},
		args:   []any{node, s.cfg.RouteTTL.Milliseconds(), newToken()},
	}
}

// parseClaim decodes claim.lua's {epoch, prev node, prev epoch}.
func parseClaim(cmd *redis.Cmd) (uint64, Route, error) {
	v, err := cmd.Slice()
	if err == nil && len(v) != 3 {
		err = fmt.Errorf("reply has %d elements, want 3", len(v))
	}
	if err != nil {
		return 0, Route{}, err
	}
	return unum(v[0]), Route{Node: str(v[1]), Epoch: unum(v[2])}, nil
}

// ReleaseRoute clears device's route only if it still names r; it is
// ReleaseRoutes for one device. Callers releasing several routes use
// ReleaseRoutes, which costs one round trip for all of them.
func (s *Store) ReleaseRoute(ctx context.Context, device string, r Route) (bool, error) {
	ok, err := s.ReleaseRoutes(ctx, []string{device}, []Route{r})
	if err != nil {
		return false, err
	}
	return ok[0], nil
}

// ReleaseRoutes clears each devices[i]'s route if it still names routes[i],
// node and epoch (compare and delete), all in one pipeline: one round trip
// whatever the number of devices. A node that lost a route can never clear
// the new owner's. The epoch stays, so the device's next claim still gets a
// larger one. The result says, per device, whether its route was released;
// false means the route was already released, gone, or owned by another
// connection.
//
// devices and routes must have the same length, and every device id and
// route node must be a valid id, or nothing is sent (ErrInvalidArgument).
// On an error some routes may have been released; a release is safe to
// retry (the retry reports false for those).
func (s *Store) ReleaseRoutes(ctx context.Context, devices []string, routes []Route) ([]bool, error) {
	if err := checkRoutes("release routes", devices, routes); err != nil {
		return nil, err
	}
	return s.compareRoutes(ctx, "release routes", releaseScript, devices, routes)
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

// RefreshRoutes renews the TTL of each devices[i]'s route to RouteTTL if it
// still names routes[i], node and epoch (compare and PEXPIRE), all in one
// pipeline. The result says, per device, whether the route was renewed.
// false means the connection no longer owns its route: another connection
// claimed it, it was released, or it is gone because Redis lost data
// (FLUSHALL, a restart that lost writes under appendfsync everysec, the key
// expired). Nothing is written for such a device, so pushes are no longer
// relayed to this connection: the caller should claim the route again
// (ClaimRoute) or close the connection.
//
// devices and routes must have the same length, and every device id and
// route node must be a valid id, or nothing is sent (ErrInvalidArgument).
func (s *Store) RefreshRoutes(ctx context.Context, devices []string, routes []Route) ([]bool, error) {
	if err := checkRoutes("refresh routes", devices, routes); err != nil {
		return nil, err
	}
	return s.compareRoutes(ctx, "refresh routes", refreshScript, devices, routes,
		s.cfg.RouteTTL.Milliseconds())
}

// checkRoutes validates the arguments of ReleaseRoutes and RefreshRoutes.
func checkRoutes(op string, devices []string, routes []Route) error {
	if len(devices) != len(routes) {
		return fmt.Errorf("%s: %d devices but %d routes: %w", op, len(devices), len(routes), ErrInvalidArgument)
	}
	if err := checkIDs(op+": device", devices); err != nil {
		return err
	}
	for i, r := range routes {
		if !validID(r.Node) {
			return fmt.Errorf("%s: device %q: node id %q: %w", op, devices[i], r.Node, ErrInvalidArgument)
		}
	}
	return nil
}

// compareRoutes runs script (release.lua or refresh.lua: KEYS[1] the route,
// ARGV node, epoch, extra...; returns 1 when the route matched) once per
// device in one pipeline and reports, per device, whether it matched.
func (s *Store) compareRoutes(ctx context.Context, op string, script *redis.Script, devices []string, routes []Route, extra ...any) ([]bool, error) {
	if len(devices) == 0 {
		return nil, nil
	}
	calls := make([]scriptCall, len(devices))
	for i, d := range devices {
		args := make([]any, 0, 2+len(extra))
		args = append(args, routes[i].Node, strconv.FormatUint(routes[i].Epoch, 10))
		calls[i] = scriptCall{
			script: script,
			keys:   []string{routeKey(d)},
			args:   append(args, extra...),
		}
	}
	if err := s.runScripts(ctx, calls); err != nil {
		return nil, wrap(op, routesKey(devices), err)
	}
	out := make([]bool, len(calls))
	for i, c := range calls {
		n, err := c.cmd.Int64()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", op, routeKey(devices[i]), err)
		}
		out[i] = n == 1
	}
	return out, nil
}

// routesKey names the route keys of devices in an error: the key itself for
// one device, a count for more.
func routesKey(devices []string) string {
	if len(devices) == 1 {
		return routeKey(devices[0])
	}
	return fmt.Sprintf("of %d devices", len(devices))
}
