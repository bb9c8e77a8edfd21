package load

import "encoding/json"

// The worker protocol. A worker reads JSON lines on its stdin and writes
// JSON lines on its stdout; its stderr is for people. A bench connect
// worker, for example:
//
//	stdin   {"scenario":"connect","worker":0,"share":{"first":0,"count":2000,"of":2000,"source":"127.0.0.2"},"params":{"target":{…},"conns":2000,…}}
//	stdout  {"event":"ready"}
//	stdin   {"cmd":"start"}
//	stdout  {"event":"connected","data":{"ok":2000,"failed":0,"heartbeat_ms":5000}}
//	stdin   {"cmd":"stop"}
//	stdout  {"event":"done","data":{"alive":2000,"drops":0}}
//
// Parent → worker: first one Job, then Commands. "start" begins the
// scenario and "stop" ends it; a scenario may define more commands. The
// end of stdin means stop, so a worker whose parent died stops by itself.
//
// Worker → parent: Events. "ready" once the job is accepted; then the
// scenario's own events, one per command that calls for an answer, whose
// data the parent adds up over every worker ("connected" and "done" for
// the device scenarios); "data" events at any time, whose data is a batch
// of the scenario's records streamed to the parent as they happen (the
// push scenario's receipts, the fanout scenario's tallies of pushes all
// the worker's subscribers got); and "error" when the worker cannot go
// on, after which it exits.
//
// The floor scenario adds one command and two events: the parent sends
// "round" before each round's writes, the worker answers "armed" (it has
// noted its CPU and reset its counts), and "read" once each of its
// connections read the round's message:
//
//	stdin   {"cmd":"round"}
//	stdout  {"event":"armed"}
//	stdout  {"event":"read","data":{"count":2000,"first_ns":…,"last_ns":…,"cpu_ns":…}}

// Commands every scenario understands.
const (
	cmdStart = "start"
	cmdStop  = "stop"
)

// Events every worker may send.
const (
	evReady = "ready"
	evData  = "data"
	evError = "error"
)

// Job is a worker's input: the first line on its stdin.
type Job struct {
	// Scenario names what to run: "connect", "push", "floor" or
	// "fanout".
	Scenario string `json:"scenario"`
	// Worker is the worker's index in its run, from 0, for diagnostics.
	Worker int `json:"worker"`
	// Share is the worker's part of the run's units.
	Share Share `json:"share"`
	// Params are the scenario's parameters, the same for every worker:
	// the scenario's type (Connect, Push, Floor, Fanout) in JSON.
	Params json.RawMessage `json:"params"`
}

// Command is a line the parent writes after the Job.
type Command struct {
	Cmd string `json:"cmd"`
}

// Event is a line a worker writes.
type Event struct {
	// Event is "ready", "data", "error" or one of the scenario's own.
	Event string `json:"event"`
	// Data is the event's payload: a scenario's tally for its own
	// events, a batch of records for "data".
	Data json.RawMessage `json:"data,omitempty"`
	// Message says what went wrong, for "error".
	Message string `json:"message,omitempty"`
}

// outEvent is Event as a worker writes it, with its data not yet encoded.
type outEvent struct {
	Event   string `json:"event"`
	Data    any    `json:"data,omitempty"`
	Message string `json:"message,omitempty"`
}
