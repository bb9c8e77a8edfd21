//go:build !race

package tests

// raceEnabled is set when the tests run with -race (see race_test.go).
const raceEnabled = false
