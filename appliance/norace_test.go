//go:build !race

package appliance

const underRace = false
