package wire

import "fmt"

// Code is a stable numeric error code carried by ERROR and UP_REPLY frames.
// Values are part of the protocol: never renumbered, never reused.
type Code uint16

// Error codes. 1–99 concern the connection and its frames, 100–199 the
// handshake and token, 200–299 requests made on an open session, 500–599
// the server.
const (
	CodeOK Code = 0

	CodeBadFrame        Code = 1 // a frame could not be decoded
	CodeVersion         Code = 2 // unsupported protocol version
	CodeFrameTooLarge   Code = 3 // frame body over the negotiated limit
	CodeProtocol        Code = 4 // a valid frame at the wrong time (e.g. PUSH from a device, a second HELLO)
	CodeSlowConsumer    Code = 5 // the connection could not keep up with its output
	CodeHeartbeatMissed Code = 6 // no frame from the device within the idle limit

	CodeHandshakeTimeout Code = 100 // no valid HELLO within the handshake timeout
	CodeTokenMalformed   Code = 101
	CodeTokenExpired     Code = 102
	CodeTokenNotYetValid Code = 103
	CodeTokenSignature   Code = 104 // forged or signed with another secret
	CodeTokenWrongApp    Code = 105 // token for another app than HELLO names
	CodeTokenWrongDevice Code = 106 // token for another device than HELLO names
	CodeTokenUnknownKey  Code = 107 // key id not known for the app (rotated out)
	CodeUnknownApp       Code = 108
	CodeTokenLifetime    Code = 109 // expiry further ahead than the maximum token lifetime
	CodeOriginForbidden  Code = 110 // browser Origin not in the allowlist
	CodeRateLimited      Code = 111 // too many connects from this address
	CodeBadHello         Code = 112 // HELLO fields missing or invalid

	CodeUnknownBusiness Code = 200
	CodeTooManyGroups   Code = 201
	CodeBadGroup        Code = 202
	CodeUpstreamFailed  Code = 203
	CodeJoinRefused     Code = 204 // the app's groups are managed by its business: no JOIN or LEAVE

	CodeInternal    Code = 500
	CodeUnavailable Code = 501
	CodeDraining    Code = 502
)

var codeNames = map[Code]string{
	CodeOK:               "ok",
	CodeBadFrame:         "bad_frame",
	CodeVersion:          "unsupported_version",
	CodeFrameTooLarge:    "frame_too_large",
	CodeProtocol:         "protocol_violation",
	CodeSlowConsumer:     "slow_consumer",
	CodeHeartbeatMissed:  "heartbeat_missed",
	CodeHandshakeTimeout: "handshake_timeout",
	CodeTokenMalformed:   "token_malformed",
	CodeTokenExpired:     "token_expired",
	CodeTokenNotYetValid: "token_not_yet_valid",
	CodeTokenSignature:   "token_bad_signature",
	CodeTokenWrongApp:    "token_wrong_app",
	CodeTokenWrongDevice: "token_wrong_device",
	CodeTokenUnknownKey:  "token_unknown_key",
	CodeUnknownApp:       "unknown_app",
	CodeTokenLifetime:    "token_lifetime_too_long",
	CodeOriginForbidden:  "origin_forbidden",
	CodeRateLimited:      "rate_limited",
	CodeBadHello:         "bad_hello",
	CodeUnknownBusiness:  "unknown_business",
	CodeTooManyGroups:    "too_many_groups",
	CodeBadGroup:         "bad_group",
	CodeUpstreamFailed:   "upstream_failed",
	CodeJoinRefused:      "join_refused",
	CodeInternal:         "internal",
	CodeUnavailable:      "unavailable",
	CodeDraining:         "draining",
}

// String returns the code's stable snake_case name.
func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code_%d", uint16(c))
}
