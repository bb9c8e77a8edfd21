// Package api holds the request and response types of pushd's two HTTP
// APIs — the push API business servers call (docs/push-api.md) and the
// admin API operators and other nodes call (docs/admin-api.md) — and one
// client for both. The handlers (appliance/pushapi, appliance/adminapi),
// pushctl and the tests all use these types, so each API shape is
// declared once.
//
// The simplest use pushes one message:
//
//	cl, err := api.NewClient("http://10.0.0.5:8090", apiKey, nil)
//	...
//	resp, err := cl.Push(ctx, &api.PushRequest{App: api.Ptr("news"),
//		Devices: []string{"phone-1"}, Data: api.Ptr("hello")})
//
// Every failure the server answers is an *APIError carrying its stable
// code. A Client is safe for concurrent use.
package api
