package wire

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/pierrec/lz4/v4"
)

// DefaultCompressThreshold is the batch size, in bytes, below which a batch
// is sent uncompressed even to a device that offered lz4: small batches do
// not shrink enough to pay for the CPU on both ends.
const DefaultCompressThreshold = 512

// compressors pools lz4 block compressors: one holds a 16 KiB hash table,
// too large to allocate per batch, and is not safe for concurrent use.
var compressors = sync.Pool{New: func() any { return new(lz4.Compressor) }}

// AppendBatch appends a BATCH frame holding frames, the concatenation of
// complete encoded frames. With compress set, the body is lz4-compressed
// when that makes it smaller; callers set it only for devices that offered
// CapLZ4 and batches over their threshold. Compression needs scratch space
// of lz4.CompressBlockBound(len(frames)) after dst's contents, so dst
// should have that capacity to avoid growing.
func AppendBatch(dst []byte, frames []byte, compress bool) []byte {
	start := len(dst)
	if compress {
		dst = appendHeader(dst, TypeBatch, FlagLZ4)
		dst = binary.AppendUvarint(dst, uint64(len(frames)))
		body := len(dst)
		bound := lz4.CompressBlockBound(len(frames))
		dst = grow(dst, bound)
		c := compressors.Get().(*lz4.Compressor)
		n, err := c.CompressBlock(frames, dst[body:body+bound])
		compressors.Put(c)
		if err == nil && n > 0 && n < len(frames) {
			return finishHeader(dst[:body+n], start)
		}
		dst = dst[:start]
	}
	dst = appendHeader(dst, TypeBatch, 0)
	dst = append(dst, frames...)
	return finishHeader(dst, start)
}

// PutBatchHeader turns b into an uncompressed BATCH frame in place: b
// starts with HeaderLen bytes reserved for the header, followed by the
// concatenated frames. A connection's output queue keeps that reserve at
// its head so merging its frames into one write needs no copy.
func PutBatchHeader(b []byte) {
	b[0], b[1], b[2] = Version, byte(TypeBatch), 0
	binary.BigEndian.PutUint32(b[3:HeaderLen], uint32(len(b)-HeaderLen))
}

// lz4MaxRatio bounds how many bytes one byte of an lz4 block can
// decompress to. A sequence costs at least three bytes (token and match
// offset) for at most 19 bytes of match, each match-length byte after them
// adds at most 255, and literals decompress to themselves.
const lz4MaxRatio = 255

// decodeBatchBody returns the concatenated frames a BATCH body holds,
// decompressing it when the header says lz4. The declared uncompressed
// length is checked against max, and against what the block could
// decompress to at most, before anything is allocated.
func decodeBatchBody(flags uint8, body []byte, max int) ([]byte, error) {
	if flags&FlagLZ4 == 0 {
		return append([]byte(nil), body...), nil
	}
	raw, n := binary.Uvarint(body)
	if n <= 0 {
		return nil, fmt.Errorf("%w: BATCH: bad uncompressed length", ErrMalformed)
	}
	if raw > uint64(max) {
		return nil, fmt.Errorf("%w: BATCH decompresses to %d bytes, limit %d", ErrTooLarge, raw, max)
	}
	if block := len(body) - n; raw > lz4MaxRatio*uint64(block) {
		return nil, fmt.Errorf("%w: BATCH: a %d-byte lz4 block cannot decompress to %d bytes", ErrMalformed, block, raw)
	}
	out := make([]byte, raw)
	got, err := lz4.UncompressBlock(body[n:], out)
	if err != nil || got != int(raw) {
		return nil, fmt.Errorf("%w: BATCH: lz4 block does not decompress to its declared %d bytes", ErrMalformed, raw)
	}
	return out, nil
}

// grow extends b by n bytes, reusing its capacity when it can.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, 2*cap(b)+n)
	copy(nb, b)
	return nb
}
