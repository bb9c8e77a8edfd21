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
		&Hello{Token: "t", App: "a", Device: "d", Caps: CapGroupCursors,
			GroupCursors: []GroupCursor{{Group: "room", Epoch: "g1", Seq: 17}, {Group: "news", Epoch: "g2"}}},
		&Welcome{Session: "s1", Node: "n1", Heartbeat: 30000, Recovered: true, Epoch: "e1", Acked: 299, MaxFrame: 16384, Caps: CapLZ4},
		&Push{Seq: 301, ID: "m1", Business: "chat", Priority: PriorityHigh, Created: 1700000000000, Payload: []byte("hello")},
		&Push{ID: "m2", Priority: PriorityLow, Group: "room", Payload: []byte("x"), Redelivery: true, Gap: true},
		&Push{ID: "m3", Priority: PriorityNormal, Group: "room", Payload: []byte("y"), GroupEpoch: "g1", GroupSeq: 18},
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
		&CatchUp{Group: "room", Recovered: true, Epoch: "g1", Seq: 18},
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
		"group cursors flagged, none given": finishHeader(append(appendHeader(nil, TypeHello, FlagGroupCursors),
			0, 0, 0, 0, 0, 0, 0, 0, 0, 0), 0),
		"group cursors past the bytes left": finishHeader(append(appendHeader(nil, TypeHello, FlagGroupCursors),
			0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0), 0),
		"more than 64 group cursors": finishHeader(append(append(appendHeader(nil, TypeHello, FlagGroupCursors),
			0, 0, 0, 0, 0, 0, 0, 0, 0, 65), bytes.Repeat([]byte{0, 0, 0}, 65)...), 0),
		"group position flagged, missing": finishHeader(append(appendHeader(nil, TypePush, FlagGroupSeq),
			0, 0, 0, 2, 0, 0, 0), 0),
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
		var pulled, fed Decoder
		var gotPulled, gotFed []Frame
		for i := 0; i < len(stream); i += chunk {
			c := stream[i:min(i+chunk, len(stream))]
			pulled.Write(c)
			for {
				f, err := pulled.Next()
				if err != nil {
					t.Fatalf("chunk %d: Next: %v", chunk, err)
				}
				if f == nil {
					break
				}
				gotPulled = append(gotPulled, f)
			}
			if err := fed.Feed(c, func(f Frame) error { gotFed = append(gotFed, f); return nil }); err != nil {
				t.Fatalf("chunk %d: Feed: %v", chunk, err)
			}
		}
		if !reflect.DeepEqual(gotPulled, frames) || !reflect.DeepEqual(gotFed, frames) {
			t.Fatalf("chunk %d: got %d frames by Next and %d by Feed, want %d", chunk, len(gotPulled), len(gotFed), len(frames))
		}
		if pulled.Buffered() != 0 || fed.Buffered() != 0 {
			t.Fatalf("chunk %d: %d and %d bytes left buffered", chunk, pulled.Buffered(), fed.Buffered())
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

func TestDecoder_OversizeHeaderAndBodyInOneWrite(t *testing.T) {
	ack := Append(nil, &Ack{Seq: 1})
	chunk := Append(append([]byte(nil), ack...), &Up{Business: "b", Payload: make([]byte, 4096)})

	d := Decoder{Max: 1024}
	var got []Frame
	err := d.Feed(chunk, func(f Frame) error { got = append(got, f); return nil })
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Feed: err = %v, want ErrTooLarge", err)
	}
	if len(got) != 1 || got[0].(*Ack).Seq != 1 {
		t.Fatalf("Feed passed %v, want the ACK before the oversize frame", got)
	}
	if cap(d.buf) != 0 {
		t.Fatalf("Feed: the failed decoder keeps a buffer of %d bytes", cap(d.buf))
	}
	if err := d.Feed(ack, func(Frame) error { t.Fatal("a failed decoder passed a frame"); return nil }); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Feed after the failure: err = %v, want ErrTooLarge", err)
	}

	d = Decoder{Max: 1024}
	d.Write(chunk)
	if cap(d.buf) != 0 {
		t.Fatalf("Write: the failed decoder keeps a buffer of %d bytes", cap(d.buf))
	}
	if f, err := d.Next(); err != nil || f.(*Ack).Seq != 1 {
		t.Fatalf("Next = %v, %v, want the ACK before the oversize frame", f, err)
	}
	if _, err := d.Next(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Next: err = %v, want ErrTooLarge", err)
	}
}

func TestDecoder_ManyFramesInOneWriteRetainOnePartialFrame(t *testing.T) {
	var chunk []byte
	for i := range 1000 {
		chunk = Append(chunk, &Push{Seq: uint64(i + 1), ID: "m", Business: "chat", Payload: []byte("hi")})
	}
	last := Append(nil, &Up{Business: "chat", Payload: make([]byte, 200)})
	cut := 100
	chunk = append(chunk, last[:cut]...)

	var fed Decoder
	n := 0
	if err := fed.Feed(chunk, func(Frame) error { n++; return nil }); err != nil || n != 1000 {
		t.Fatalf("Feed: %d frames, %v", n, err)
	}
	var pulled Decoder
	pulled.Write(chunk)
	for d, name := range map[*Decoder]string{&fed: "Feed", &pulled: "Write"} {
		if d.Buffered() != cut || cap(d.buf) > len(last) {
			t.Fatalf("%s: holds %d bytes in a buffer of %d, want the %d-byte tail of one %d-byte frame", name, d.Buffered(), cap(d.buf), cut, len(last))
		}
	}
	for n = 0; ; n++ {
		f, err := pulled.Next()
		if err != nil {
			t.Fatal(err)
		}
		if f == nil {
			break
		}
	}
	if n != 1000 {
		t.Fatalf("Next returned %d frames, want 1000", n)
	}

	var rest Frame
	if err := fed.Feed(last[cut:], func(f Frame) error { rest = f; return nil }); err != nil {
		t.Fatal(err)
	}
	if up, ok := rest.(*Up); !ok || len(up.Payload) != 200 || fed.Buffered() != 0 {
		t.Fatalf("the partial frame completed as %#v, %d bytes left", rest, fed.Buffered())
	}
}

func TestDecoder_FramesDoNotAliasTheChunk(t *testing.T) {
	want := []Frame{
		&Push{Seq: 1, ID: "m1", Business: "chat", Payload: []byte("payload")},
		&Batch{Frames: Append(nil, &Up{Business: "b", Payload: []byte("up")})},
	}
	var stream []byte
	for _, f := range want {
		stream = Append(stream, f)
	}
	for cut := 0; cut <= len(stream); cut++ {
		var d Decoder
		var got []Frame
		for _, part := range [][]byte{stream[:cut], stream[cut:]} {
			chunk := append([]byte(nil), part...)
			if err := d.Feed(chunk, func(f Frame) error { got = append(got, f); return nil }); err != nil {
				t.Fatal(err)
			}
			scribble(chunk)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("cut at %d: the frames changed with the chunk they came in: %#v", cut, got)
		}
	}
}

func TestDecoder_FeedStopsAtTheCallbacksError(t *testing.T) {
	stop := errors.New("stop")
	stream := Append(Append(Append(nil, &Ping{Time: 1}), &Ping{Time: 2}), &Ping{Time: 3})
	var d Decoder
	n := 0
	err := d.Feed(stream, func(Frame) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Fatalf("Feed = %v after %d frames, want %v after 2", err, n, stop)
	}
	if err := d.Feed(stream, func(Frame) error { n++; return nil }); !errors.Is(err, stop) || n != 2 {
		t.Fatalf("Feed after the callback failed = %v, %d frames", err, n)
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
