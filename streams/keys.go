package streams

// Every key name is built here. A device's keys share the hash tag
// {device}, a user's {user}, a group's {group} and a node's {node}, so
// each Lua script touches a single Redis Cluster slot. Suffixes are chosen so that none is a suffix of another:
// keys of different devices can never collide, whatever the ids contain.
// The braces themselves are refused in ids (validID), since an id holding a
// '}' would move the hash tag.

const (
	devicePrefix = "pushd:{"
	userPrefix   = "pushd:u:{"
	groupPrefix  = "pushd:g:{"
	nodePrefix   = "pushd:node:{"

	// nodesKey is the set of node ids that ever sent a heartbeat and were not
	// retired. It is a single key, so it needs no hash tag.
	nodesKey = "pushd:nodes"

	// group is the consumer group on every node's delivery stream.
	group = "pushd"
)

// inboxKey is the device's inbox stream: unacked entries with ids 0-<seq>.
func inboxKey(device string) string { return devicePrefix + device + "}:inbox" }

// metaKey is the device's inbox meta hash: e epoch, l last seq, a acked seq,
// t seq trimmed up to by the cap, x lost seq, k the inbox keys' expiry (ms,
// client clock), which lets an append skip renewing TTLs that are not due.
func metaKey(device string) string { return devicePrefix + device + "}:meta" }

// dedupeKey is the sorted set of the device's recent message ids, scored by
// seq.
func dedupeKey(device string) string { return devicePrefix + device + "}:dedupe" }

// routeKey is the device's route hash: n node, e connection epoch, and the
// last claim's token and predecessor (c, pn, pe) for idempotent retries.
func routeKey(device string) string { return devicePrefix + device + "}:route" }

// deviceGroupsKey is the set of groups the device is a member of.
func deviceGroupsKey(device string) string { return devicePrefix + device + "}:groups" }

// userDevicesKey is the sorted set of the user's devices, scored by their
// last handshake (unix ms).
func userDevicesKey(user string) string { return userPrefix + user + "}:devices" }

// userGroupsKey is the set of groups the user is a member of.
func userGroupsKey(user string) string { return userPrefix + user + "}:groups" }

// groupMembersKey is the set of a group's members, as the caller names
// them (ChangeMembers' Member.Name).
func groupMembersKey(group string) string { return groupPrefix + group + "}:members" }

// groupMetaKey is the hash of a group's catch-up stream: n most entries,
// a max age ms, e epoch, l last seq, t seq trimmed up to, m and ms the
// last message id appended and its seq.
func groupMetaKey(group string) string { return groupPrefix + group + "}:meta" }

// groupStreamKey is a group's catch-up stream: entries with ids 0-<seq>.
func groupStreamKey(group string) string { return groupPrefix + group + "}:stream" }

// deliveryKey is the node's delivery stream, read by its consumer group.
func deliveryKey(node string) string { return nodePrefix + node + "}:deliveries" }

// heartbeatKey holds the node's NodeInfo as JSON and expires after NodeTTL.
func heartbeatKey(node string) string { return nodePrefix + node + "}:heartbeat" }
