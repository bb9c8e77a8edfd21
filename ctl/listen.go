package ctl

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
)

func listenCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "listen",
		Usage: "connect as a device and print every frame it receives",
		Description: "Connects with the Go device SDK, so acks, dedupe by message id and reconnects are the\n" +
			"product's own. Prints one line per frame received (WELCOME, PUSH, CATCHUP, PONG, UP_REPLY,\n" +
			"CONTROL, ERROR; a PUSH the SDK drops says duplicate=true or out_of_order=true) and per\n" +
			"sequence gap.\n" +
			"Stops on SIGINT/SIGTERM (exit 0), when kicked by another connection of the device (exit 1),\n" +
			"or when the server refuses the session for good (exit 1).",
		Flags: append(append([]cli.Flag{
			&cli.StringFlag{Name: "device", Usage: "device id (required)"},
			&cli.StringFlag{Name: "token", Usage: "device token (default: minted from the app's secret before every connect)"},
			&cli.StringFlag{Name: "user", Usage: "the user the minted token binds the device to"},
			&cli.StringSliceFlag{Name: "tag", Usage: "a tag of the minted token, for filters (repeatable, at most 16)"},
			&cli.StringFlag{Name: "platform", Usage: "the platform HELLO declares, for filters", Value: "pushctl"},
			&cli.StringFlag{Name: "version", Usage: "the app version HELLO declares, for filters", Value: "listen"},
			&cli.BoolFlag{Name: "lz4", Usage: "offer lz4-compressed batches"},
			&cli.StringFlag{Name: "epoch", Usage: "resume cursor: inbox epoch"},
			&cli.Uint64Flag{Name: "seq", Usage: "resume cursor: last sequence number handled (needs --epoch)"},
			&cli.StringSliceFlag{Name: "business", Usage: "business multiplexed on the connection (repeatable)"},
			&cli.StringSliceFlag{Name: "group-cursor", Usage: "resume cursor of a group's catch-up stream: GROUP=EPOCH:SEQ (repeatable)"},
		}, settingFlags(setURL, setApp, setKeyID, setSecret)...), outputFlags()...),
		Action: func(c *cli.Context) error { return runListen(c, e) },
	}
}

func runListen(c *cli.Context, e *env) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if c.NArg() > 0 {
		return usagef("unexpected arguments %q", c.Args().Slice())
	}
	k, err := loadConfig(c, e)
	if err != nil {
		return err
	}
	device := c.String("device")
	if device == "" {
		return usagef("missing --device")
	}
	url, err := k.require(setURL)
	if err != nil {
		return err
	}
	app, err := k.require(setApp)
	if err != nil {
		return err
	}
	if c.IsSet("seq") && c.String("epoch") == "" {
		return usagef("--seq needs --epoch: a sequence number means nothing without its inbox epoch")
	}
	groupCursors, err := parseGroupCursors(c.StringSlice("group-cursor"))
	if err != nil {
		return err
	}
	p := &framePrinter{w: e.stdout, json: format == formatJSON}
	ctx := c.Context
	cfg := client.Config{
		URL: url, App: app, Device: device,
		Platform: c.String("platform"), Version: c.String("version"),
		Businesses:   c.StringSlice("business"),
		LZ4:          c.Bool("lz4"),
		Cursor:       client.Cursor{Epoch: c.String("epoch"), Seq: c.Uint64("seq")},
		GroupCursors: groupCursors,
		OnFrame:      p.frame,
		OnMessage:    func(m client.Message) { p.push(m, 0) },
		OnDrop:       p.push,
		OnGap:        p.gap,
		OnDisconnect: func(err error) {
			p.welcomed = false
			if ctx.Err() != nil || errors.Is(err, client.ErrKicked) {
				return
			}
			fmt.Fprintf(e.stderr, "pushctl listen: disconnected: %v\n", err)
		},
	}
	if tok := c.String("token"); tok != "" {
		if c.IsSet("user") || c.IsSet("tag") {
			return usagef("--user and --tag go into the token pushctl mints: leave them out with --token")
		}
		cfg.Token = tok
	} else {
		keyID, err := k.require(setKeyID)
		if err != nil {
			return err
		}
		secret, err := k.secret()
		if err != nil {
			return err
		}
		mint := mintFunc(token.Claims{App: app, Device: device, User: c.String("user"), Tags: c.StringSlice("tag"), KeyID: keyID}, secret)
		if _, err := mint(); err != nil {
			return usagef("cannot mint a token for %q: %v", device, err)
		}
		cfg.TokenFunc = func(context.Context) (string, error) { return mint() }
	}
	cl, err := client.New(cfg)
	if err != nil {
		return usagef("%v", err)
	}
	err = cl.Run(ctx)
	switch {
	case ctx.Err() != nil:
		return nil
	case errors.Is(err, client.ErrKicked):
		return fmt.Errorf("listen as %s: %w", device, err)
	default:
		return fmt.Errorf("listen as %s at %s: %w", device, url, err)
	}
}

// parseGroupCursors reads --group-cursor values, GROUP=EPOCH:SEQ: "=" is
// in no id, and an epoch is hex, so the last ":" ends it.
func parseGroupCursors(vals []string) ([]client.GroupCursor, error) {
	var out []client.GroupCursor
	seen := map[string]bool{}
	for _, v := range vals {
		group, pos, ok1 := strings.Cut(v, "=")
		i := strings.LastIndexByte(pos, ':')
		if !ok1 || i <= 0 || !token.ValidID(group) {
			return nil, usagef("--group-cursor %q: want GROUP=EPOCH:SEQ, as listen prints a group message's group, group_epoch and group_seq", v)
		}
		seq, err := strconv.ParseUint(pos[i+1:], 10, 64)
		if err != nil {
			return nil, usagef("--group-cursor %q: sequence number %q: %v", v, pos[i+1:], err)
		}
		if seen[group] {
			return nil, usagef("--group-cursor: group %s given twice", group)
		}
		seen[group] = true
		out = append(out, client.GroupCursor{Group: group, Epoch: pos[:i], Seq: seq})
	}
	return out, nil
}

// framePrinter prints every frame the SDK receives, one line each, and
// the gaps it finds. The SDK calls it from one goroutine at a time, so it
// needs no lock.
//
// PUSH lines come from OnMessage and OnDrop, which say whether the SDK
// handed the message over, rather than from OnFrame, which sees it first;
// every other frame is printed from OnFrame.
type framePrinter struct {
	w    io.Writer
	json bool
	// welcomed is set from WELCOME to the end of the connection: a PUSH
	// before it reaches neither OnMessage nor OnDrop (the SDK rejects
	// it), so OnFrame prints it.
	welcomed bool
}

// listenEvent is one JSON line of listen -o json. Fields not meaningful
// for the type are omitted.
type listenEvent struct {
	Time string `json:"time"`
	Type string `json:"type"`

	// WELCOME
	Session     string `json:"session,omitempty"`
	Node        string `json:"node,omitempty"`
	HeartbeatMS *int64 `json:"heartbeat_ms,omitempty"`
	Recovered   *bool  `json:"recovered,omitempty"`
	Epoch       string `json:"epoch,omitempty"`

	// PUSH
	Seq           *uint64 `json:"seq,omitempty"`
	ID            string  `json:"id,omitempty"`
	Business      string  `json:"business,omitempty"`
	Priority      string  `json:"priority,omitempty"`
	Created       string  `json:"created,omitempty"`
	Group         string  `json:"group,omitempty"` // also CATCHUP, with recovered, epoch and seq
	GroupEpoch    string  `json:"group_epoch,omitempty"`
	GroupSeq      *uint64 `json:"group_seq,omitempty"`
	Redelivered   bool    `json:"redelivered,omitempty"`
	Duplicate     bool    `json:"duplicate,omitempty"`    // dropped by the SDK as a repeat
	OutOfOrder    bool    `json:"out_of_order,omitempty"` // dropped by the SDK: an unflagged seq jump
	Payload       *string `json:"payload,omitempty"`      // also UP_REPLY
	PayloadBase64 *string `json:"payload_base64,omitempty"`

	// CONTROL (and Priority: for degraded, the highest priority shed)
	Kind       string   `json:"kind,omitempty"`
	Reason     string   `json:"reason,omitempty"`
	Addr       string   `json:"addr,omitempty"`
	Businesses []string `json:"businesses,omitempty"`

	// GAP
	From *uint64 `json:"from,omitempty"`
	To   *uint64 `json:"to,omitempty"`

	// PONG: the echoed PING time (unix ms) and the round trip it implies
	PingTime *uint64 `json:"ping_time,omitempty"`
	RTTMS    *int64  `json:"rtt_ms,omitempty"`

	// UP_REPLY and ERROR (and Payload for UP_REPLY)
	Request *uint64 `json:"request,omitempty"`
	Code    string  `json:"code,omitempty"`
	Message *string `json:"message,omitempty"`

	// any other frame type, as Go prints it
	Frame string `json:"frame,omitempty"`
}

func (p *framePrinter) emit(ev listenEvent, fields ...string) {
	now := time.Now()
	if p.json {
		ev.Time = now.UTC().Format(time.RFC3339Nano)
		_ = writeJSON(p.w, ev)
		return
	}
	fmt.Fprintf(p.w, "%s  %-8s %s\n", now.Format("15:04:05.000"), ev.Type, strings.Join(fields, " "))
}

// frame prints f, unless it is a PUSH that OnMessage or OnDrop will print.
func (p *framePrinter) frame(f wire.Frame) {
	switch f := f.(type) {
	case *wire.Welcome:
		p.welcomed = true
		p.welcome(f)
	case *wire.Push:
		if !p.welcomed {
			p.push(client.Message{ID: f.ID, Seq: f.Seq, Business: f.Business, Priority: f.Priority,
				Created: time.UnixMilli(int64(f.Created)), Group: f.Group, GroupEpoch: f.GroupEpoch, GroupSeq: f.GroupSeq,
				Payload: f.Payload, Redelivered: f.Redelivery}, 0)
		}
	case *wire.CatchUp:
		p.emit(listenEvent{Type: "CATCHUP", Group: f.Group, Recovered: &f.Recovered, Epoch: f.Epoch, Seq: &f.Seq},
			"group="+f.Group, "recovered="+strconv.FormatBool(f.Recovered), "epoch="+orDash(f.Epoch),
			"seq="+strconv.FormatUint(f.Seq, 10))
	case *wire.Control:
		p.control(f)
	case *wire.Pong:
		rtt := time.Now().UnixMilli() - int64(f.Time)
		p.emit(listenEvent{Type: "PONG", PingTime: &f.Time, RTTMS: &rtt},
			"ping_time="+strconv.FormatUint(f.Time, 10), "rtt="+(time.Duration(rtt)*time.Millisecond).String())
	case *wire.UpReply:
		ev := listenEvent{Type: "UP_REPLY", Request: &f.Request, Code: f.Code.String()}
		fields := []string{"request=" + strconv.FormatUint(f.Request, 10), "code=" + ev.Code}
		p.emit(ev, append(fields, payloadField(&ev, f.Payload))...)
	case *wire.Error:
		p.emit(listenEvent{Type: "ERROR", Code: f.Code.String(), Request: &f.Request, Message: &f.Message},
			"code="+f.Code.String(), "request="+strconv.FormatUint(f.Request, 10), "message="+strconv.Quote(f.Message))
	default:
		s := strings.TrimPrefix(fmt.Sprintf("%+v", f), "&")
		p.emit(listenEvent{Type: f.Type().String(), Frame: s}, s)
	}
}

func (p *framePrinter) welcome(w *wire.Welcome) {
	hb := time.Duration(w.Heartbeat) * time.Millisecond
	hbMS := hb.Milliseconds()
	p.emit(listenEvent{Type: "WELCOME", Session: w.Session, Node: w.Node, HeartbeatMS: &hbMS, Recovered: &w.Recovered, Epoch: w.Epoch},
		"session="+orDash(w.Session), "node="+orDash(w.Node), "heartbeat="+hb.String(),
		"recovered="+strconv.FormatBool(w.Recovered), "epoch="+orDash(w.Epoch))
}

// push prints a PUSH: handed over when why is 0, else dropped by the SDK.
func (p *framePrinter) push(m client.Message, why client.DropReason) {
	ev := listenEvent{Type: "PUSH", Seq: &m.Seq, ID: m.ID, Business: m.Business, Priority: m.Priority.String(),
		Group: m.Group, Redelivered: m.Redelivered, Duplicate: why == client.DropRepeat, OutOfOrder: why == client.DropOutOfOrder}
	if !m.Created.IsZero() && m.Created.Unix() > 0 {
		ev.Created = m.Created.UTC().Format(time.RFC3339Nano)
	}
	fields := []string{"seq=" + strconv.FormatUint(m.Seq, 10), "id=" + orDash(m.ID), "business=" + orDash(m.Business),
		"priority=" + m.Priority.String()}
	if m.Group != "" {
		fields = append(fields, "group="+m.Group)
	}
	if m.GroupEpoch != "" {
		ev.GroupEpoch, ev.GroupSeq = m.GroupEpoch, &m.GroupSeq
		fields = append(fields, "group_epoch="+m.GroupEpoch, "group_seq="+strconv.FormatUint(m.GroupSeq, 10))
	}
	if m.Redelivered {
		fields = append(fields, "redelivered=true")
	}
	if ev.Duplicate {
		fields = append(fields, "duplicate=true")
	}
	if ev.OutOfOrder {
		fields = append(fields, "out_of_order=true")
	}
	p.emit(ev, append(fields, payloadField(&ev, m.Payload))...)
}

// payloadField sets ev's payload, as text when printable, else as base64,
// and returns its field for the text line.
func payloadField(ev *listenEvent, b []byte) string {
	if printable(b) {
		s := string(b)
		ev.Payload = &s
		return "payload=" + strconv.Quote(s)
	}
	s := base64.StdEncoding.EncodeToString(b)
	ev.PayloadBase64 = &s
	return "payload_base64=" + s
}

func (p *framePrinter) control(c *wire.Control) {
	ev := listenEvent{Type: "CONTROL", Kind: c.Kind.String(), Reason: c.Reason, Addr: c.Addr}
	fields := []string{"kind=" + c.Kind.String()}
	if c.Kind == wire.ControlDegraded {
		ev.Priority, ev.Businesses = c.Priority.String(), c.Businesses
		fields = append(fields, "priority="+ev.Priority)
		if len(c.Businesses) > 0 {
			fields = append(fields, "businesses="+strings.Join(c.Businesses, ","))
		}
	}
	if c.Addr != "" {
		fields = append(fields, "addr="+c.Addr)
	}
	fields = append(fields, "reason="+strconv.Quote(c.Reason))
	p.emit(ev, fields...)
}

func (p *framePrinter) gap(from, to uint64) {
	p.emit(listenEvent{Type: "GAP", From: &from, To: &to},
		"from="+strconv.FormatUint(from, 10), "to="+strconv.FormatUint(to, 10))
}

// printable reports whether a payload reads as text: valid UTF-8 of
// printable characters and ordinary whitespace.
func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) && r != '\n' && r != '\r' && r != '\t' {
			return false
		}
	}
	return true
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
