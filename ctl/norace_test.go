//go:build !race

package ctl

const underRace = false
