package wire

// Decoder cuts a byte stream (raw TCP) into frames. Input arrives in chunks
// of any size, through Feed or through Write and Next.
//
// Feed decodes the frames straight out of the caller's chunk and copies
// only the incomplete frame at its end, so the decoder never holds more
// than Max+HeaderLen bytes, whatever the chunk size. An oversize or bad
// header is reported as soon as its seven bytes are in, before any of the
// body is buffered. Frames never alias the chunk: Decode copies every
// byte-slice and string field.
//
// Write and Next are the older, pull-style interface to the same decoder:
// Write decodes what the chunk completes and queues the frames for Next.
// The byte buffer obeys the same bound, but the queue holds every frame of
// the chunk until Next returns it.
//
// The zero Decoder uses DefaultMaxFrame. A Decoder is not safe for
// concurrent use.
type Decoder struct {
	// Max is the largest body length accepted; zero means DefaultMaxFrame.
	Max int

	// buf holds the start of the one frame the input so far leaves
	// incomplete: fewer than HeaderLen bytes, or a checked header and
	// part of its body. It is never longer than the frame and its
	// capacity never exceeds HeaderLen+Max.
	buf []byte
	// queue holds the frames Write decoded that Next has not returned
	// yet, from queue[qoff].
	queue []Frame
	qoff  int
	// err is the failure that ended the stream; Feed returns it at once,
	// Next once the queue is drained.
	err error
}

const (
	// releaseAbove is the buffer capacity above which a decoder that
	// completes its pending frame drops its buffer instead of keeping it
	// for the next one: an idle connection should not pin a large buffer.
	releaseAbove = 4 << 10
	// minBuffer is the smallest buffer allocated for a pending frame, so
	// a frame arriving in small pieces is not copied at every piece.
	minBuffer = 64
)

func (d *Decoder) max() int {
	if d.Max > 0 {
		return d.Max
	}
	return DefaultMaxFrame
}

// Feed decodes the frames that p completes and calls fn with each, in
// order, then keeps the incomplete frame at the end of p, if any, for the
// next call. p is not retained: the caller may reuse it once Feed returns.
//
// Feed returns the first decoding error, or the first error fn returns;
// either ends the stream, and every later call returns the same error
// without calling fn. Frames decoded before the failure have been passed
// to fn.
func (d *Decoder) Feed(p []byte, fn func(Frame) error) error {
	for d.qoff < len(d.queue) {
		if err := fn(d.pop()); err != nil {
			d.fail(err)
			d.dropQueue()
			return err
		}
	}
	if d.err != nil {
		return d.err
	}
	if err := d.feed(p, fn); err != nil {
		d.fail(err)
		return err
	}
	return nil
}

// Write decodes the frames p completes and queues them for Next, keeping
// only the incomplete frame at the end of p. It does not retain p, so the
// caller may reuse it. Once decoding has failed, Write drops its input.
func (d *Decoder) Write(p []byte) {
	if d.err != nil || len(p) == 0 {
		return
	}
	if err := d.feed(p, d.push); err != nil {
		d.fail(err)
	}
}

// Next returns the next frame Write decoded, or (nil, nil) when more input
// is needed. After an error the stream is unusable: every later call
// returns the same error.
func (d *Decoder) Next() (Frame, error) {
	if d.qoff < len(d.queue) {
		return d.pop(), nil
	}
	return nil, d.err
}

// Buffered returns how many bytes are held waiting for the rest of a frame.
func (d *Decoder) Buffered() int { return len(d.buf) }

// feed is Feed without the queue and without recording the failure.
func (d *Decoder) feed(p []byte, fn func(Frame) error) error {
	limit := d.max()
	if len(d.buf) > 0 {
		f, rest, err := d.complete(p, limit)
		if err != nil || f == nil {
			return err
		}
		if err := fn(f); err != nil {
			return err
		}
		p = rest
	}
	for len(p) > 0 {
		if len(p) < HeaderLen {
			d.hold(p, HeaderLen+limit)
			return nil
		}
		h, err := ParseHeader(p, limit)
		if err != nil {
			return err
		}
		n := HeaderLen + h.Length
		if len(p) < n {
			d.hold(p, n)
			return nil
		}
		f, _, err := Decode(p[:n], limit)
		if err != nil {
			return err
		}
		if err := fn(f); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// complete moves bytes from the head of p into the pending frame. It
// returns the frame once it is whole, with what is left of p; a nil frame
// means p ran out first.
func (d *Decoder) complete(p []byte, limit int) (Frame, []byte, error) {
	if len(d.buf) < HeaderLen {
		k := min(HeaderLen-len(d.buf), len(p))
		d.hold(p[:k], HeaderLen+limit)
		p = p[k:]
		if len(d.buf) < HeaderLen {
			return nil, nil, nil
		}
	}
	h, err := ParseHeader(d.buf, limit)
	if err != nil {
		return nil, nil, err
	}
	n := HeaderLen + h.Length
	k := min(n-len(d.buf), len(p))
	d.hold(p[:k], n)
	p = p[k:]
	if len(d.buf) < n {
		return nil, nil, nil
	}
	f, _, err := Decode(d.buf, limit)
	if cap(d.buf) > releaseAbove {
		d.buf = nil
	} else {
		d.buf = d.buf[:0]
	}
	if err != nil {
		return nil, nil, err
	}
	return f, p, nil
}

// hold appends b to the pending frame, which is at most limit bytes long.
// A new buffer at least doubles the old one, so a frame arriving in small
// pieces is copied a bounded number of times, but never exceeds limit, so
// a header promising a large body costs only the bytes that came.
func (d *Decoder) hold(b []byte, limit int) {
	need := len(d.buf) + len(b)
	if need > cap(d.buf) {
		nb := make([]byte, len(d.buf), min(max(need, 2*cap(d.buf), minBuffer), limit))
		copy(nb, d.buf)
		d.buf = nb
	}
	d.buf = append(d.buf, b...)
}

func (d *Decoder) push(f Frame) error {
	d.queue = append(d.queue, f)
	return nil
}

func (d *Decoder) pop() Frame {
	f := d.queue[d.qoff]
	d.queue[d.qoff] = nil
	d.qoff++
	if d.qoff == len(d.queue) {
		d.dropQueue()
	}
	return f
}

// dropQueue empties the queue, keeping its array unless it grew large.
func (d *Decoder) dropQueue() {
	clear(d.queue[d.qoff:])
	if cap(d.queue) > releaseAbove/16 {
		d.queue = nil
	} else {
		d.queue = d.queue[:0]
	}
	d.qoff = 0
}

// fail ends the stream with err and drops the pending bytes.
func (d *Decoder) fail(err error) {
	d.err = err
	d.buf = nil
}
