//go:build !race

package js_test

const underRace = false
