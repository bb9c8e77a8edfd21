// Command pushctl is the operator CLI of pushd; see package ctl and
// docs/pushctl.md.
package main

import (
	"os"

	"github.com/pushd/pushd/ctl"
)

func main() {
	os.Exit(ctl.Main(os.Args, os.Stdin, os.Stdout, os.Stderr))
}
