// Package load is pushd's load generator, the engine behind `pushctl
// bench`: it opens device sessions from worker processes, drives the push
// API, measures the server, and reports what it saw. It takes its input as
// values (a Plan and a scenario) and returns reports; flags, settings
// files and output formats are the CLI's business.
//
// The simplest use opens sessions against a server and reads the report:
//
//	rep, err := load.Connect{
//		Target: load.Target{URL: "ws://127.0.0.1:8080/v1/ws", App: "demo", KeyID: "k1", Secret: secret},
//		Conns:  2000,
//		Hold:   10 * time.Second,
//	}.Run(ctx, load.Plan{})
//
// A zero Plan runs the workers as goroutines of the calling process. A
// process may open at most 20,000 files here, so real runs spread over
// worker processes of at most MaxPerWorker units each: pushctl sets
// Plan.Spawn to Exec of its own executable with "bench", "worker", and
// runs Work as that command's main. A worker reads one Job as a JSON line on stdin (the
// scenario's name, the worker's Share, the scenario's parameters) and
// answers in JSON lines on stdout; protocol.go has the whole exchange.
// StartLocal starts a throwaway `pushd --dev` to run against, and Probe
// measures a server's memory (ProcRSS, ScrapeRSS).
//
// The scenarios are Connect (sessions held: connect rate, memory per
// session, drops), Push (pushes: accept and delivery rates, latency,
// loss), Floor (the machine's own cost of one write to each of many
// loopback connections, with no server in between) and Fanout (pushes to
// a group or the whole app: time to the first and the last subscriber,
// against the Floor of the same workers). A scenario is a type whose exported fields are its parameters,
// with a Run method for the parent's side and a work method for a
// worker's; scenario.go says how a new one is added. What workers answer
// adds up over workers (counters, Reasons, Histogram), so a run's report
// is the same however many workers it had.
//
// Concurrency: Run only reads its Plan and scenario value, so one Plan can
// serve several runs at once; it calls Plan.Warn and Plan.Progress from
// the goroutine that called Run. A PushAPI is called from many goroutines
// at once. Reasons and Histogram are not safe for concurrent use. A Local
// may be stopped from any goroutine.
package load
