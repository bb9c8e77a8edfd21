// Package wire is the pushd device protocol: a versioned binary frame format
// spoken between a device and a pushd node, identical on WebSocket (one frame
// or one BATCH per binary message) and on raw TCP (the frame header carries
// the body length, so frames are self-delimiting on a byte stream).
//
// The format is documented byte by byte in docs/protocol.md. Every frame
// starts with a seven-byte header:
//
//	version:u8 type:u8 flags:u8 length:u32 (big-endian body length)
//
// The simplest use is to append a frame to a buffer and to decode one back:
//
//	buf := wire.Append(nil, &wire.Ping{Time: 42})
//	f, n, err := wire.Decode(buf, wire.DefaultMaxFrame)
//
// A byte stream (raw TCP) is cut into frames by a [Decoder], which accepts
// input in chunks of any size and keeps only the incomplete frame at the
// end of each, at most Max+HeaderLen bytes:
//
//	d := wire.Decoder{Max: 16 << 10}
//	err := d.Feed(chunk, func(f wire.Frame) error {
//		...
//		return nil
//	})
//
// Decoding never panics. The declared body length is checked against the
// caller's limit before anything is read, and decoding allocates no more
// than the limit: a string, byte slice or list is allocated only when the
// bytes left could hold it, and a compressed BATCH's declared size is
// checked against the limit and against what its block could decompress
// to before its buffer is allocated. Encoding is allocation-free when the
// destination buffer has room, so a message can be framed once and the
// same bytes written to many connections.
//
// The package is pure: no I/O, no goroutines, no global state besides
// constants. Functions are safe for concurrent use; a Decoder is not.
package wire
