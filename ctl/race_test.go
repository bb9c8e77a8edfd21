//go:build race

package ctl

// underRace is set in -race builds. Real nbio listeners trip the race
// detector inside nbio (see appliance/race_test.go), so tests that start
// an appliance node skip under -race; everything else runs raced.
const underRace = true
