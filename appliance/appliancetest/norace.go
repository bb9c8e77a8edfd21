//go:build !race

package appliancetest

// RaceEnabled is true in -race builds (see race.go).
const RaceEnabled = false
