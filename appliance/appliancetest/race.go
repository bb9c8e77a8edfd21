//go:build race

package appliancetest

// RaceEnabled is true in -race builds: nodes then serve devices through
// ServeConn on a std listener instead of nbio, whose hand-over of a
// connection between goroutines the race detector cannot follow.
const RaceEnabled = true
