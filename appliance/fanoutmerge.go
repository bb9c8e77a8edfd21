package appliance

import (
	"slices"
	"sync"
	"time"
)

// fanoutPace is the least time between the starts of two rounds of one
// audience while its fan-outs queue behind one another. Within it,
// fan-outs wait for the next round and go in it: a storm of 200
// broadcasts a second to 15,000 sessions is then at most 50 passes over
// them, not 200, for at most fanoutPace more before the first member has
// them. A fan-out that finds no round of its audience running never
// waits: one caller pushing to a group one message after another is not
// slowed.
const fanoutPace = 20 * time.Millisecond

// fanoutLines merge the fan-outs of one audience that arrive while one of
// its rounds runs into the next round, which starts fanoutPace after the
// running one did at the earliest: their frames are concatenated and
// handed to every recipient at once, so a storm of broadcasts costs one
// pass over the recipients (a lock and a copy each) per round rather than
// per message, and each recipient gets them in one BATCH. A fan-out that
// finds its audience idle runs at once.
//
// Rounds of one audience run one after the other in the order they were
// opened, and frames join a round in the order they arrive, so messages
// to one audience keep the order of their fan-out calls.
type fanoutLines struct {
	mu    sync.Mutex
	lines map[string]*fanoutLine // by fanoutKey
}

// fanoutLine is one audience's rounds: the one running, and the one
// waiting behind it that new frames join.
type fanoutLine struct {
	key     string       // its audience's fanoutKey
	last    *fanoutRound // the newest round, running or waiting
	open    *fanoutRound // the waiting round, nil when none waits
	started time.Time    // when the round running, or the last that ran, began
}

// fanoutRound is frames handed to the recipients together.
type fanoutRound struct {
	line       *fanoutLine
	prev       *fanoutRound // the round it waits for; nil: it ran at once
	frames     []byte       // concatenated frames
	ids        []string     // each frame's message id, in order
	done       chan struct{}
	recipients int // set before done is closed
}

// fanoutKey says which fan-outs may merge: the same group (or broadcast)
// and the same audience, by value.
func fanoutKey(group string, aud audience) string {
	return group + "\x00" + aud.business + "\x00" + string(aud.filter.encoded())
}

// fanout hands frame, message id's, to the recipients of group in aud with
// run, merged with the other fan-outs of that audience that queue behind
// the one running, and returns the recipients of the round it went in.
func (l *fanoutLines) fanout(id string, frame []byte, group string, aud audience, run roundRunner) int {
	r, runs := l.add(id, frame, group, aud)
	if runs {
		l.run(r, group, aud, run)
	}
	<-r.done
	return r.recipients
}

// hand is fanout for a caller that does not need the recipients: it
// returns once frame is in a round, without waiting for a round queued
// behind the running one, which runs on its own goroutine. A node's
// delivery loop hands its fan-out entries this way, so that a storm on
// one audience never holds up the entries behind them.
func (l *fanoutLines) hand(id string, frame []byte, group string, aud audience, run roundRunner) {
	r, runs := l.add(id, frame, group, aud)
	switch {
	case !runs:
	case r.prev == nil:
		l.run(r, group, aud, run)
	default:
		go l.run(r, group, aud, run)
	}
}

// roundRunner hands one round's frames, one per message of ids, to the
// recipients and returns how many there were.
type roundRunner func(frames []byte, ids []string, group string, aud audience) int

// add puts frame in its audience's waiting round, or in a new round, and
// reports whether the round is new: its caller then runs it.
func (l *fanoutLines) add(id string, frame []byte, group string, aud audience) (*fanoutRound, bool) {
	key := fanoutKey(group, aud)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lines == nil {
		l.lines = map[string]*fanoutLine{}
	}
	line := l.lines[key]
	if line == nil {
		line = &fanoutLine{key: key}
		l.lines[key] = line
	}
	if r := line.open; r != nil {
		r.frames = append(r.frames, frame...)
		r.ids = append(r.ids, id)
		return r, false
	}
	// Clipped, so that a frame joining later copies the two rather than
	// writing into the spare capacity of the caller's buffer.
	r := &fanoutRound{line: line, prev: line.last, frames: slices.Clip(frame), ids: []string{id}, done: make(chan struct{})}
	line.last = r
	if r.prev != nil {
		line.open = r
	}
	return r, true
}

// run runs round r once the round before it is done and fanoutPace has
// passed since that one began, and closes r.done.
func (l *fanoutLines) run(r *fanoutRound, group string, aud audience, run roundRunner) {
	line := r.line
	if r.prev != nil {
		<-r.prev.done
		l.mu.Lock()
		pause := time.Until(line.started.Add(fanoutPace))
		l.mu.Unlock()
		if pause > 0 {
			time.Sleep(pause)
		}
	}
	l.mu.Lock()
	if line.open == r {
		line.open = nil // the round runs with what it holds now
	}
	line.started = time.Now()
	l.mu.Unlock()
	r.recipients = run(r.frames, r.ids, group, aud)
	l.mu.Lock()
	if line.last == r {
		delete(l.lines, line.key)
	}
	l.mu.Unlock()
	close(r.done)
}
