package wire

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// sampleFrames holds one populated frame of every type.
func sampleFrames() []Frame {
	return []Frame{
		&Hello{Token: "v1.abc.def", App: "app1", Device: "dev-1", Platform: "ios", Version: "1.2.3",
			Businesses: []string{"chat", "news"}, Epoch: "e1", Seq: 300, Caps: CapLZ4},
		&Welcome{Session: "s1", Node: "n1", Heartbeat: 30000, Recovered: true, Epoch: "e1", Acked: 299, MaxFrame: 16384, Caps: CapLZ4},
		&Push{Seq: 301, ID: "m1", Business: "chat", Priority: PriorityHigh, Created: 1700000000000, Payload: []byte("hello")},
		&Push{ID: "m2", Priority: PriorityLow, Group: "room", Payload: []byte("x"), Redelivery: true, Gap: true},
		&Ack{Seq: 301},
		&Ping{Time: 12},
		&Pong{Time: 12},
		&Up{Request: 7, Business: "chat", Payload: []byte("up")},
		&UpReply{Request: 7, Code: CodeUpstreamFailed, Payload: []byte("nope")},
		&Join{Request: 8, Group: "room"},
		&Leave{Request: 9, Group: "room"},
		&Control{Kind: ControlDegraded, Priority: PriorityNormal, Reason: "incident", Addr: "ws://n2/v1/ws"},
		&Error{Code: CodeTokenExpired, Request: 0, Message: "token expired"},
		&Batch{Frames: Append(Append(nil, &Ping{Time: 1}), &Ack{Seq: 2})},
	}
}

func TestRoundTrip_EveryType(t *testing.T) {
	for _, f := range sampleFrames() {
		t.Run(f.Type().String(), func(t *testing.T) {
			b := Append(nil, f)
			got, n, err := Decode(b, DefaultMaxFrame)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if n != len(b) {
				t.Fatalf("decode took %d of %d bytes", n, len(b))
			}
			if !reflect.DeepEqual(got, f) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, f)
			}
		})
	}
}

func TestPushLen_MatchesEncoding(t *testing.T) {
	for _, f := range sampleFrames() {
		if p, ok := f.(*Push); ok {
			if got, want := PushLen(p), len(AppendPush(nil, p)); got != want {
				t.Fatalf("PushLen = %d, encoded %d", got, want)
			}
		}
	}
}

func TestDecode_EveryPrefixIsTruncated(t *testing.T) {
	for _, f := range sampleFrames() {
		b := Append(nil, f)
		for i := 0; i < len(b); i++ {
			_, _, err := Decode(b[:i], DefaultMaxFrame)
			if !errors.Is(err, ErrTruncated) {
				t.Fatalf("%s prefix %d/%d: err = %v, want ErrTruncated", f.Type(), i, len(b), err)
			}
		}
	}
}

func TestDecode_RejectsBadHeaders(t *testing.T) {
	good := Append(nil, &Ping{Time: 1})
	cases := []struct {
		name string
		mut  func([]byte) []byte
		want error
		code Code
	}{
		{"version", func(b []byte) []byte { b[0] = 2; return b }, ErrVersion, CodeVersion},
		{"type zero", func(b []byte) []byte { b[1] = 0; return b }, ErrUnknownType, CodeBadFrame},
		{"type unknown", func(b []byte) []byte { b[1] = 0x7F; return b }, ErrUnknownType, CodeBadFrame},
		{"too large", func(b []byte) []byte { b[3] = 0x01; return b }, ErrTooLarge, CodeFrameTooLarge},
		{"huge length", func(b []byte) []byte { b[3], b[4], b[5], b[6] = 0xFF, 0xFF, 0xFF, 0xFF; return b }, ErrTooLarge, CodeFrameTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.mut(append([]byte(nil), good...))
			_, _, err := Decode(b, DefaultMaxFrame)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if CodeOf(err) != c.code {
				t.Fatalf("CodeOf = %v, want %v", CodeOf(err), c.code)
			}
		})
	}
}

func TestDecode_RejectsMalformedBodies(t *testing.T) {
	cases := map[string][]byte{
		"string past end":   finishHeader(append(appendHeader(nil, TypeJoin, 0), 1, 50, 'a'), 0),
		"bad varint":        finishHeader(append(appendHeader(nil, TypeAck, 0), 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01), 0),
		"bool not 0 or 1":   finishHeader(append(appendHeader(nil, TypeWelcome, 0), 0, 0, 1, 7), 0),
		"code out of range": finishHeader(append(appendHeader(nil, TypeError, 0), 0xFF, 0xFF, 0x7F), 0),
		"too many businesses": finishHeader(append(appendHeader(nil, TypeHello, 0),
			0, 0, 0, 0, 0, 0xFF, 0x01), 0),
		"empty ack": finishHeader(appendHeader(nil, TypeAck, 0), 0),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if _, _, err := Decode(b, DefaultMaxFrame); !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestDecode_IgnoresTrailingFieldsOfLaterVersions(t *testing.T) {
	b := Append(nil, &Ack{Seq: 5})
	b = append(b, 0xAA, 0xBB)
	b = finishHeader(b, 0)
	f, n, err := Decode(b, DefaultMaxFrame)
	if err != nil || n != len(b) || f.(*Ack).Seq != 5 {
		t.Fatalf("got %#v, %d, %v", f, n, err)
	}
}

func TestBatch_CompressesOnlyWhenItHelps(t *testing.T) {
	var frames []byte
	for i := 0; i < 50; i++ {
		frames = AppendPush(frames, &Push{Seq: uint64(i + 1), ID: "message-id", Business: "chat", Payload: []byte(strings.Repeat("hello world ", 8))})
	}
	compressed := AppendBatch(nil, frames, true)
	if compressed[2]&FlagLZ4 == 0 {
		t.Fatal("a repetitive batch was not compressed")
	}
	if len(compressed) >= len(frames) {
		t.Fatalf("compressed batch is %d bytes, frames %d", len(compressed), len(frames))
	}
	f, _, err := Decode(compressed, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.(*Batch).Frames, frames) {
		t.Fatal("decompressed frames differ")
	}
	count := 0
	if err := f.(*Batch).Each(DefaultMaxFrame, func(Frame) error { count++; return nil }); err != nil || count != 50 {
		t.Fatalf("Each: %d frames, %v", count, err)
	}

	// Incompressible input falls back to a plain batch.
	random := Append(nil, &Push{ID: "r", Payload: []byte{0x93, 0x1f, 0x04, 0xe2, 0x7b, 0x55, 0xc0, 0x18}})
	plain := AppendBatch(nil, random, true)
	if plain[2]&FlagLZ4 != 0 {
		t.Fatal("an incompressible batch was sent compressed")
	}
}

func TestPutBatchHeader_MatchesAppendBatch(t *testing.T) {
	frames := Append(Append(nil, &Ping{Time: 1}), &Pong{Time: 2})
	inPlace := append(make([]byte, HeaderLen), frames...)
	PutBatchHeader(inPlace)
	if !bytes.Equal(inPlace, AppendBatch(nil, frames, false)) {
		t.Fatal("in-place batch header differs from AppendBatch")
	}
}

func TestBatch_DecompressionBombIsRefused(t *testing.T) {
	frames := bytes.Repeat(Append(nil, &Ping{}), 10000)
	b := AppendBatch(nil, frames, true)
	if _, _, err := Decode(b, 1<<20); err != nil {
		t.Fatalf("within limit: %v", err)
	}
	if _, _, err := Decode(b, 4096); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the limit once decompressed: err = %v, want ErrTooLarge", err)
	}
}

func TestBatch_NestedIsRefused(t *testing.T) {
	inner := AppendBatch(nil, Append(nil, &Ping{}), false)
	outer := &Batch{Frames: inner}
	if err := outer.Each(DefaultMaxFrame, func(Frame) error { return nil }); !errors.Is(err, ErrNestedBatch) {
		t.Fatalf("err = %v, want ErrNestedBatch", err)
	}
}

func TestDecoder_SplitChunks(t *testing.T) {
	var stream []byte
	frames := sampleFrames()
	for _, f := range frames {
		stream = Append(stream, f)
	}
	for chunk := 1; chunk <= 17; chunk++ {
		var d Decoder
		var got []Frame
		for i := 0; i < len(stream); i += chunk {
			d.Write(stream[i:min(i+chunk, len(stream))])
			for {
				f, err := d.Next()
				if err != nil {
					t.Fatalf("chunk %d: %v", chunk, err)
				}
				if f == nil {
					break
				}
				got = append(got, f)
			}
		}
		if !reflect.DeepEqual(got, frames) {
			t.Fatalf("chunk %d: got %d frames, want %d", chunk, len(got), len(frames))
		}
		if d.Buffered() != 0 {
			t.Fatalf("chunk %d: %d bytes left buffered", chunk, d.Buffered())
		}
	}
}

func TestDecoder_OversizeFailsOnHeader(t *testing.T) {
	d := Decoder{Max: 1024}
	big := Append(nil, &Up{Business: "b", Payload: make([]byte, 4096)})
	d.Write(big[:HeaderLen])
	if _, err := d.Next(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge as soon as the header is in", err)
	}
	d.Write(big[HeaderLen:])
	if d.Buffered() > HeaderLen {
		t.Fatalf("a failed decoder buffered %d bytes", d.Buffered())
	}
}

func TestDecoder_ReleasesLargeBufferWhenDrained(t *testing.T) {
	var d Decoder
	f := Append(nil, &Up{Business: "b", Payload: make([]byte, 8000)})
	d.Write(f[:100])
	d.Write(f[100:])
	if fr, err := d.Next(); fr == nil || err != nil {
		t.Fatalf("Next = %v, %v", fr, err)
	}
	if fr, err := d.Next(); fr != nil || err != nil {
		t.Fatalf("Next on empty = %v, %v", fr, err)
	}
	if d.buf != nil {
		t.Fatalf("drained decoder still holds %d bytes of capacity", cap(d.buf))
	}
}

func TestSetPushFlag(t *testing.T) {
	b := AppendPush(nil, &Push{Seq: 1, ID: "m"})
	SetPushFlag(b, FlagRedelivery, true)
	SetPushFlag(b, FlagGap, true)
	f, _, _ := Decode(b, DefaultMaxFrame)
	if p := f.(*Push); !p.Redelivery || !p.Gap {
		t.Fatalf("flags not set: %+v", p)
	}
	SetPushFlag(b, FlagRedelivery, false)
	f, _, _ = Decode(b, DefaultMaxFrame)
	if p := f.(*Push); p.Redelivery || !p.Gap {
		t.Fatalf("only redelivery should be cleared: %+v", p)
	}
}

func TestAppendPush_NoAllocationWithRoom(t *testing.T) {
	p := &Push{Seq: 9, ID: "0123456789abcdef", Business: "chat", Priority: PriorityNormal, Created: 1, Payload: make([]byte, 256)}
	buf := make([]byte, 0, 1024)
	allocs := testing.AllocsPerRun(100, func() { buf = AppendPush(buf[:0], p) })
	if allocs != 0 {
		t.Fatalf("AppendPush allocates %.1f times per call", allocs)
	}
}

func TestParsePriority(t *testing.T) {
	for _, p := range []Priority{PriorityLow, PriorityNormal, PriorityHigh} {
		got, err := ParsePriority(p.String())
		if err != nil || got != p {
			t.Fatalf("ParsePriority(%q) = %v, %v", p.String(), got, err)
		}
	}
	if _, err := ParsePriority("urgent"); err == nil {
		t.Fatal("ParsePriority accepted urgent")
	}
}

func TestCode_StringsAreStable(t *testing.T) {
	if CodeTokenExpired.String() != "token_expired" || Code(999).String() != "code_999" {
		t.Fatal("code names changed")
	}
}
