//go:build race

package tests

// raceEnabled is set when the tests run with -race: TestMain then builds
// pushd and pushctl with -race too, so the nodes these tests run report
// data races, and the node helpers fail a test whose node logged one.
const raceEnabled = true
