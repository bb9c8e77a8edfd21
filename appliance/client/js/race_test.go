//go:build race

package js_test

// underRace: the race pass runs no JavaScript (see TestMain).
const underRace = true
