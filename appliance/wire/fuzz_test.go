package wire

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to Decode and checks that it never
// panics, never reports consuming more than it was given, and that what it
// accepts re-encodes to a frame that decodes to the same value.
func FuzzDecode(f *testing.F) {
	for _, fr := range sampleFrames() {
		f.Add(Append(nil, fr))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, n, err := Decode(b, DefaultMaxFrame)
		if err != nil {
			if fr != nil || n != 0 {
				t.Fatalf("error %v with frame %v and n %d", err, fr, n)
			}
			return
		}
		if n < HeaderLen || n > len(b) {
			t.Fatalf("consumed %d of %d", n, len(b))
		}
		again, _, err := Decode(Append(nil, fr), 1<<20)
		if err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", fr.Type(), err)
		}
		if fr.Type() != again.Type() {
			t.Fatalf("type changed %s → %s", fr.Type(), again.Type())
		}
		if batch, ok := fr.(*Batch); ok {
			_ = batch.Each(DefaultMaxFrame, func(Frame) error { return nil })
		}
	})
}

// FuzzDecoder feeds a stream to the Decoder in chunks whose sizes come from
// the fuzzer, through Feed and through Write and Next, at the default limit
// and at a small one. It checks that both report the frames and the error
// that Decode finds walking the whole stream, whatever the split; that no
// frame aliases a chunk, which is overwritten as soon as it has been
// handed over; and that the decoder never holds more than one incomplete
// frame: never more than Max+HeaderLen bytes of buffer, and after the last
// chunk exactly the stream's incomplete tail.
func FuzzDecoder(f *testing.F) {
	var stream []byte
	for _, fr := range sampleFrames() {
		stream = Append(stream, fr)
	}
	f.Add(stream, []byte{1, 3, 7, 200})
	f.Add(stream[:len(stream)-3], []byte{5})
	f.Add(Append(nil, &Ping{Time: 1}), []byte{0})
	oversize := Append(Append(nil, &Ack{Seq: 1}), &Up{Business: "b", Payload: bytes.Repeat([]byte{'x'}, 60)})
	f.Add(oversize, []byte{255})
	f.Add(bytes.Repeat(Append(nil, &Ping{Time: 3}), 40), []byte{255, 2})
	f.Fuzz(func(t *testing.T, stream, splits []byte) {
		chunks := splitBy(stream, splits)
		for _, limit := range []int{DefaultMaxFrame, 40} {
			want, tail, wantErr := decodeStream(stream, limit)
			for _, via := range []string{"Feed", "Write"} {
				got, d, err := decodeChunks(t, via, limit, chunks)
				if unwrapKind(err) != unwrapKind(wantErr) {
					t.Fatalf("%s, limit %d: error %v, Decode over the whole stream %v", via, limit, err, wantErr)
				}
				if len(got) != len(want) {
					t.Fatalf("%s, limit %d: %d frames, Decode over the whole stream %d", via, limit, len(got), len(want))
				}
				for i := range want {
					if !bytes.Equal(Append(nil, got[i]), want[i]) {
						t.Fatalf("%s, limit %d: frame %d differs from Decode's", via, limit, i)
					}
				}
				if wantErr == nil && d.Buffered() != tail {
					t.Fatalf("%s, limit %d: %d bytes buffered at the end, the incomplete tail is %d", via, limit, d.Buffered(), tail)
				}
				if wantErr != nil && cap(d.buf) != 0 {
					t.Fatalf("%s, limit %d: a failed decoder keeps %d bytes", via, limit, cap(d.buf))
				}
			}
		}
	})
}

// decodeStream walks stream with Decode and returns each frame encoded
// again, the length of the incomplete frame at the end, and the first
// error other than that incompleteness.
func decodeStream(stream []byte, limit int) ([][]byte, int, error) {
	var out [][]byte
	for len(stream) > 0 {
		fr, n, err := Decode(stream, limit)
		if errors.Is(err, ErrTruncated) {
			return out, len(stream), nil
		}
		if err != nil {
			return out, 0, err
		}
		out = append(out, Append(nil, fr))
		stream = stream[n:]
	}
	return out, 0, nil
}

// decodeChunks runs a Decoder over copies of the chunks, through Feed or
// through Write and Next, and returns the frames, the decoder and the
// first error. Each copy is scribbled over once handed over, so a frame
// that aliased it would differ from Decode's. It fails t as soon as the
// decoder's buffer outgrows one frame.
func decodeChunks(t *testing.T, via string, limit int, chunks [][]byte) ([]Frame, *Decoder, error) {
	d := &Decoder{Max: limit}
	var out []Frame
	checkBound := func() {
		if len(d.buf) >= HeaderLen+limit || cap(d.buf) > HeaderLen+limit {
			t.Fatalf("%s, limit %d: decoder holds %d bytes in a buffer of %d", via, limit, len(d.buf), cap(d.buf))
		}
	}
	for _, c := range chunks {
		c = append([]byte(nil), c...)
		var err error
		switch via {
		case "Feed":
			err = d.Feed(c, func(fr Frame) error {
				checkBound()
				out = append(out, fr)
				return nil
			})
			scribble(c)
		case "Write":
			d.Write(c)
			scribble(c)
			for {
				var fr Frame
				fr, err = d.Next()
				if fr == nil || err != nil {
					break
				}
				out = append(out, fr)
			}
		}
		checkBound()
		if err != nil {
			return out, d, err
		}
	}
	return out, d, nil
}

// scribble changes every byte of b, as a caller reusing its read buffer
// would.
func scribble(b []byte) {
	for i := range b {
		b[i] = ^b[i]
	}
}

func splitBy(stream, splits []byte) [][]byte {
	var chunks [][]byte
	for i := 0; len(stream) > 0; i++ {
		n := len(stream)
		if len(splits) > 0 {
			n = int(splits[i%len(splits)]) + 1
		}
		n = min(n, len(stream))
		chunks = append(chunks, stream[:n])
		stream = stream[n:]
	}
	return chunks
}

func unwrapKind(err error) error {
	for _, kind := range []error{ErrVersion, ErrTooLarge, ErrUnknownType, ErrMalformed} {
		if errors.Is(err, kind) {
			return kind
		}
	}
	return err
}
