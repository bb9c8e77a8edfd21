package appliance

import (
	"slices"
	"sync"
	"time"
)

// fanoutPace is the least time between the starts of two rounds of one
// audience. Within it, fan-outs wait for the next round and go in it: a
// storm of 200 broadcasts a second to 15,000 sessions is then 50 passes
// over them, not 200, each handing a member four frames, for at most
// fanoutPace more before the first member has them.
const fanoutPace = 20 * time.Millisecond

// fanoutLines merge the fan-outs of one audience that arrive while one of
// its rounds runs, or within fanoutPace of its start, into the next round:
// their frames are concatenated and handed to every recipient at once, so
// a storm of broadcasts costs one pass over the recipients (a lock and a
// copy each) per round rather than per message, and each recipient gets
// them in one BATCH. A fan-out that finds its audience idle for
// fanoutPace runs at once.
//
// Rounds of one audience run one after the other in the order they were
// opened, and frames join a round in the order they arrive, so messages
// to one audience keep the order of their fan-out calls.
type fanoutLines struct {
	mu    sync.Mutex
	lines map[string]*fanoutLine // by fanoutKey
}

// fanoutLine is one audience's rounds: the one running, and the one
// waiting behind it that new frames join. A line outlives its last round
// by fanoutPace, so that the next fan-out keeps the pace.
type fanoutLine struct {
	last    *fanoutRound // the newest round, running, waiting or done
	open    *fanoutRound // the waiting round, nil when none waits
	started time.Time    // when the newest round that ran began
}

// fanoutRound is frames handed to the recipients together.
type fanoutRound struct {
	frames     []byte   // concatenated frames
	ids        []string // each frame's message id, in order
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
func (l *fanoutLines) fanout(id string, frame []byte, group string, aud audience,
	run func(frames []byte, ids []string, group string, aud audience) int) int {
	key := fanoutKey(group, aud)
	l.mu.Lock()
	if l.lines == nil {
		l.lines = map[string]*fanoutLine{}
	}
	line := l.lines[key]
	if line == nil {
		line = &fanoutLine{}
		l.lines[key] = line
	}
	if r := line.open; r != nil {
		r.frames = append(r.frames, frame...)
		r.ids = append(r.ids, id)
		l.mu.Unlock()
		<-r.done
		return r.recipients
	}
	// Clipped, so that a frame joining later copies the two rather than
	// writing into the spare capacity of the caller's buffer.
	r := &fanoutRound{frames: slices.Clip(frame), ids: []string{id}, done: make(chan struct{})}
	prev := line.last
	line.last = r
	wait := prev != nil
	if wait {
		line.open = r
	}
	l.mu.Unlock()
	if wait {
		<-prev.done
		l.mu.Lock()
		pause := time.Until(line.started.Add(fanoutPace))
		l.mu.Unlock()
		if pause > 0 {
			time.Sleep(pause)
		}
		l.mu.Lock()
		line.open = nil // the round runs with what it holds now
		l.mu.Unlock()
	}
	l.mu.Lock()
	line.started = time.Now()
	l.mu.Unlock()
	r.recipients = run(r.frames, r.ids, group, aud)
	close(r.done)
	time.AfterFunc(fanoutPace, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if line.last == r && l.lines[key] == line {
			delete(l.lines, key)
		}
	})
	return r.recipients
}
