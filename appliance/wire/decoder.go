package wire

// Decoder cuts a byte stream (raw TCP) into frames. Input arrives through
// Write in chunks of any size, and Next returns each frame once all of its
// bytes are in. An oversize or bad header is reported as soon as the seven
// header bytes are in, before the body is waited for or buffered, so a
// peer cannot make the decoder hold more than Max+HeaderLen bytes.
//
// The zero Decoder uses DefaultMaxFrame. A Decoder is not safe for
// concurrent use.
type Decoder struct {
	// Max is the largest body length accepted; zero means DefaultMaxFrame.
	Max int

	buf []byte
	off int
	err error
}

// releaseAbove is the buffer capacity above which a drained decoder drops
// its buffer instead of keeping it for the next frame: an idle connection
// should not pin a large buffer.
const releaseAbove = 4 << 10

func (d *Decoder) max() int {
	if d.Max > 0 {
		return d.Max
	}
	return DefaultMaxFrame
}

// Write appends a chunk of the stream. It copies p, so the caller may reuse
// it. Once Next has failed, Write drops its input.
func (d *Decoder) Write(p []byte) {
	if d.err != nil || len(p) == 0 {
		return
	}
	if d.off > 0 && d.off == len(d.buf) {
		d.buf, d.off = d.buf[:0], 0
	}
	if d.off > 0 && cap(d.buf)-len(d.buf) < len(p) {
		n := copy(d.buf, d.buf[d.off:])
		d.buf, d.off = d.buf[:n], 0
	}
	d.buf = append(d.buf, p...)
}

// Next returns the next complete frame, or (nil, nil) when more input is
// needed. After an error the stream is unusable: every later call returns
// the same error.
func (d *Decoder) Next() (Frame, error) {
	if d.err != nil {
		return nil, d.err
	}
	pending := d.buf[d.off:]
	if len(pending) < HeaderLen {
		d.release()
		return nil, nil
	}
	h, err := ParseHeader(pending, d.max())
	if err != nil {
		d.err = err
		return nil, err
	}
	if len(pending) < HeaderLen+h.Length {
		return nil, nil
	}
	f, n, err := Decode(pending, d.max())
	if err != nil {
		d.err = err
		return nil, err
	}
	d.off += n
	return f, nil
}

// Buffered returns how many bytes are held waiting for the rest of a frame.
func (d *Decoder) Buffered() int { return len(d.buf) - d.off }

func (d *Decoder) release() {
	if d.off == len(d.buf) && cap(d.buf) > releaseAbove {
		d.buf, d.off = nil, 0
	}
}
