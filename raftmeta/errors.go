package raftmeta

import (
	"errors"
	"fmt"
)

// The package's sentinel errors. The Store translates raft's errors into
// these, and every refused command matches one of ErrNotFound, ErrConflict
// or ErrInvalid, so callers (the appliance's admin API) map errors to
// status codes with errors.Is and never see raft's own. Context errors
// pass through as they are.
var (
	// ErrNotLeader is returned by leader-only operations on a follower or
	// candidate. The error is a *NotLeaderError naming the leader when one
	// is known; the caller forwards the request there.
	ErrNotLeader = errors.New("not leader")

	// ErrLeadershipLost is returned when leadership changed while a command
	// was in flight: it may or may not have been committed. Retrying with
	// the same request id is safe because the FSM remembers applied ids.
	ErrLeadershipLost = errors.New("leadership lost while committing")

	// ErrTimeout is returned when raft did not accept a command before the
	// caller's deadline (or the default enqueue timeout).
	ErrTimeout = errors.New("timed out")

	// ErrClosed is returned by every operation on a closed Store.
	ErrClosed = errors.New("store closed")

	// ErrNotFound is returned when a command names a member, app, key or
	// token that does not exist.
	ErrNotFound = errors.New("not found")

	// ErrConflict is returned when a command would create something that
	// already exists, or reuses a request id for a different command.
	ErrConflict = errors.New("conflict")

	// ErrInvalid is returned for a malformed command or configuration: bad
	// identifiers, out-of-range limits, short secrets, unknown types.
	ErrInvalid = errors.New("invalid")
)

// NotLeaderError is the ErrNotLeader returned by a node that is not the
// leader. It says where the leader is so the caller can forward the
// request there (the appliance bounds how often a request is forwarded on).
type NotLeaderError struct {
	// LeaderID and LeaderRaftAddr come from raft; both are empty while no
	// leader is known (an election is running).
	LeaderID       string
	LeaderRaftAddr string
	// Leader is the leader's Member record from the replicated state; its
	// AdminAddr is where writes are forwarded. Known is false when the
	// leader is unknown or has not registered a Member record yet.
	Leader Member
	Known  bool
}

// Error reports the leader, if any.
func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return ErrNotLeader.Error() + ": no leader elected"
	}
	return fmt.Sprintf("%s: leader is %s at %s", ErrNotLeader, e.LeaderID, e.LeaderRaftAddr)
}

// Unwrap makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// applyError is the error an FSM command produces. It carries the sentinel
// separately from the message so that the request-id memory can store it as
// (code, message) and a replay can return an error that matches the same
// sentinel and reads the same.
type applyError struct {
	kind error
	msg  string
}

func (e *applyError) Error() string { return e.msg }
func (e *applyError) Unwrap() error { return e.kind }

// failf builds an applyError: the message is the formatted text followed by
// the sentinel's text, e.g. `app "x": not found`.
func failf(kind error, format string, args ...any) error {
	return &applyError{kind: kind, msg: fmt.Sprintf(format, args...) + ": " + kind.Error()}
}

// errorCodes names the sentinels an applied command can fail with; the names
// are stored in snapshots, so they never change.
var errorCodes = map[error]string{
	ErrNotFound: "not_found",
	ErrConflict: "conflict",
	ErrInvalid:  "invalid",
}

// errorCode returns the stored code of an apply error.
func errorCode(err error) string {
	for kind, code := range errorCodes {
		if errors.Is(err, kind) {
			return code
		}
	}
	// Apply functions only fail through failf with a sentinel above; treat
	// anything else as invalid rather than losing the failure.
	return "invalid"
}

// errorFromCode rebuilds an apply error from its stored form.
func errorFromCode(code, msg string) error {
	for kind, c := range errorCodes {
		if c == code {
			return &applyError{kind: kind, msg: msg}
		}
	}
	return &applyError{kind: ErrInvalid, msg: msg}
}
