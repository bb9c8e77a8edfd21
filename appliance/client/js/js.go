// Package js holds pushd.js, the JavaScript device SDK for browsers and
// Node.js 20+ (README.md beside it says how to use it). The Go side of
// the package only embeds the module, so that pushd --dev can serve it to
// its dev page; its tests (js_test.go) run the SDK's Node.js and headless
// Chromium suites against real pushd processes.
package js

import _ "embed"

// Module is the source of pushd.js, the ES module a page imports.
//
//go:embed pushd.js
var Module []byte
