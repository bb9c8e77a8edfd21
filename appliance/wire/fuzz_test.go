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
// the fuzzer, and checks that the frames and the error it reports do not
// depend on how the stream was split.
func FuzzDecoder(f *testing.F) {
	var stream []byte
	for _, fr := range sampleFrames() {
		stream = Append(stream, fr)
	}
	f.Add(stream, []byte{1, 3, 7, 200})
	f.Add(stream[:len(stream)-3], []byte{5})
	f.Add(Append(nil, &Ping{Time: 1}), []byte{0})
	f.Fuzz(func(t *testing.T, stream, splits []byte) {
		whole, wholeErr := decodeAll(stream, [][]byte{stream})
		chunks := splitBy(stream, splits)
		parts, partsErr := decodeAll(stream, chunks)
		if unwrapKind(wholeErr) != unwrapKind(partsErr) {
			t.Fatalf("split changed the error: whole %v, split %v", wholeErr, partsErr)
		}
		if len(whole) != len(parts) {
			t.Fatalf("split changed the frame count: whole %d, split %d", len(whole), len(parts))
		}
		for i := range whole {
			if !bytes.Equal(whole[i], parts[i]) {
				t.Fatalf("frame %d differs between whole and split decoding", i)
			}
		}
	})
}

// decodeAll runs a Decoder over the chunks and returns each frame
// re-encoded, plus the first error.
func decodeAll(_ []byte, chunks [][]byte) ([][]byte, error) {
	d := Decoder{Max: DefaultMaxFrame}
	var out [][]byte
	for _, c := range chunks {
		d.Write(c)
		for {
			fr, err := d.Next()
			if err != nil {
				return out, err
			}
			if fr == nil {
				break
			}
			out = append(out, Append(nil, fr))
			if d.Buffered() > DefaultMaxFrame+HeaderLen+len(c) {
				return out, errors.New("decoder buffered past its limit")
			}
		}
	}
	return out, nil
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
