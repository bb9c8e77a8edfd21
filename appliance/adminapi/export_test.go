package adminapi

// Exported for the tests in package adminapi_test, which check what a
// forwarded write carries and how far it goes.
const (
	ForwardedHeader   = forwardedHeader
	TimeLeftHeader    = timeLeftHeader
	AdminWriteTimeout = adminWriteTimeout
	MaxForwardHops    = maxForwardHops
)
