package wire

import (
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
)

// bytesPerRun returns the heap bytes fn allocates per call, on average.
func bytesPerRun(runs int, fn func()) uint64 {
	fn()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		fn()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}

// frameOf frames body as a t frame with the given flags.
func frameOf(t Type, flags uint8, body []byte) []byte {
	return finishHeader(append(appendHeader(nil, t, flags), body...), 0)
}

func TestDecode_HostileLengthsDoNotAllocate(t *testing.T) {
	const limit = 1 << 20
	huge := binary.AppendUvarint(nil, 1<<40)
	var hugeList []byte
	hugeList = append(hugeList, 0, 0, 0, 0, 0, maxListLen)
	for range maxListLen {
		hugeList = append(hugeList, huge...)
	}
	cases := []struct {
		name  string
		frame []byte
		want  error
		// budget is the most the failed decode may allocate: its frame
		// struct and its error, and the list header when the list is
		// not refused before it is made.
		budget uint64
	}{
		{"HELLO of 64 businesses in a tiny frame", frameOf(TypeHello, 0, append([]byte{0, 0, 0, 0, 0, maxListLen}, huge...)), ErrMalformed, 512},
		{"HELLO of 64 businesses of huge lengths", frameOf(TypeHello, 0, hugeList), ErrMalformed, 2048},
		{"HELLO token of a huge length", frameOf(TypeHello, 0, huge), ErrMalformed, 512},
		{"CONTROL of 64 businesses in a tiny frame", frameOf(TypeControl, 0, []byte{1, 1, 0, 0, maxListLen, 1, 'a'}), ErrMalformed, 512},
		{"PUSH payload of a huge length", frameOf(TypePush, 0, append([]byte{1, 1, 'm', 0, 2, 1, 0}, huge...)), ErrMalformed, 512},
		{"lz4 BATCH over the limit", frameOf(TypeBatch, FlagLZ4, append(binary.AppendUvarint(nil, 1<<40), 0x10, 'a')), ErrTooLarge, 512},
		{"lz4 BATCH of the limit in a tiny block", frameOf(TypeBatch, FlagLZ4, append(binary.AppendUvarint(nil, limit), 0xff, 0, 0, 0)), ErrMalformed, 512},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, _, err := Decode(c.frame, limit); !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			got := bytesPerRun(100, func() { _, _, _ = Decode(c.frame, limit) })
			if got > c.budget {
				t.Fatalf("a failed decode of a %d-byte frame allocates %d bytes, budget %d", len(c.frame), got, c.budget)
			}
		})
	}
}

func TestDecoder_PartialFrameCostsOnlyItsBytes(t *testing.T) {
	head := Append(nil, &Up{Business: "b", Payload: make([]byte, CeilingMaxFrame-16)})[:HeaderLen+10]
	got := bytesPerRun(100, func() {
		d := Decoder{Max: CeilingMaxFrame}
		_ = d.Feed(head, func(Frame) error { return nil })
		if d.Buffered() != len(head) {
			t.Fatalf("buffered %d of %d bytes", d.Buffered(), len(head))
		}
	})
	if got > 2*minBuffer {
		t.Fatalf("a header promising %d bytes and 10 of them cost %d bytes", CeilingMaxFrame, got)
	}
}

// TestBatch_MostCompressibleBlockDecodes checks that lz4MaxRatio does not
// refuse a real block: zeros compress as far as lz4 goes, close to 255:1.
func TestBatch_MostCompressibleBlockDecodes(t *testing.T) {
	const size = 4 << 20
	b := AppendBatch(nil, make([]byte, size), true)
	if b[2]&FlagLZ4 == 0 {
		t.Fatal("zeros were not compressed")
	}
	f, _, err := Decode(b, size)
	if err != nil {
		t.Fatalf("a %d-byte block of %d zeros: %v", len(b), size, err)
	}
	if len(f.(*Batch).Frames) != size {
		t.Fatalf("decompressed to %d bytes, want %d", len(f.(*Batch).Frames), size)
	}
}
