package streams

import (
	"context"
	"fmt"
)

// Open is what a connecting device needs: it claims device's route for
// node and resumes the device's inbox from pos, with the results and
// semantics of ClaimRoute(ctx, device, node) followed by Resume(ctx, device,
// pos, limit), but in one round trip instead of two. The two scripts go in
// one pipeline, claim first; each touches only keys of the device's own
// {device} hash tag, and they share none, so neither result depends on the
// other.
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
	if !validID(device) || !validID(node) {
		return 0, Route{}, Resumed{}, fmt.Errorf("open %q for node %q: %w", device, node, ErrInvalidArgument)
	}
	calls := []scriptCall{s.claimCall(device, node), s.resumeCall(device, pos, limit)}
	// runReplicated reports the first failed call; the two are told
	// apart below, since a failed resume must still return the claimed
	// epoch. With both applied, its error is the replicas' shortfall.
	unconfirmed := s.runReplicated(ctx, calls)
	claim, resume := calls[0].cmd, calls[1].cmd
	if err := claim.Err(); err != nil {
		return 0, Route{}, Resumed{}, wrap("open: claim route", routeKey(device), err)
	}
	if epoch, prev, err = parseClaim(claim); err != nil {
		return 0, Route{}, Resumed{}, fmt.Errorf("open: claim route %s: %w", routeKey(device), err)
	}
	if err := resume.Err(); err != nil {
		return epoch, prev, Resumed{}, wrap("open: resume", inboxKey(device), err)
	}
	if unconfirmed != nil {
		// What the resume read may be lost in a failover: the caller
		// must not send it, and releases the claimed route.
		return epoch, prev, Resumed{}, wrap("open: resume", inboxKey(device), unconfirmed)
	}
	if res, err = parseResume(resume); err != nil {
		return epoch, prev, Resumed{}, fmt.Errorf("open: resume %s: %w", inboxKey(device), err)
	}
	return epoch, prev, res, nil
}
