// Package testmain runs the tests of a package that mostly wait — on
// processes, timers, Raft elections and sockets rather than on the CPU —
// more at a time than the machine has cores.
//
// go test runs a package's parallel tests GOMAXPROCS at a time, two on
// the 2-core machines pushd is tested on, which leaves those packages'
// cores idle most of their run. A package calls Run from its TestMain.
package testmain

import (
	"flag"
	"runtime"
	"strconv"
	"testing"
)

// Run runs m with up to parallel tests at a time, or GOMAXPROCS when that
// is more, unless the command line set -parallel (which then wins), and
// returns m.Run's exit code.
func Run(m *testing.M, parallel int) int {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		if err := flag.Set("test.parallel", strconv.Itoa(max(parallel, runtime.GOMAXPROCS(0)))); err != nil {
			panic(err) // only a Go release without -test.parallel gets here
		}
	}
	return m.Run()
}
