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
	"github.com/pushd/pushd/appliance/wire"
)

func listenCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "listen",
		Usage: "connect as a device and print every message it receives",
		Description: "Connects with the Go device SDK, so acks, dedupe by message id and reconnects are the\n" +
			"product's own. Prints one line per WELCOME, PUSH, CONTROL and sequence gap; acks every push.\n" +
			"Stops on SIGINT/SIGTERM (exit 0), when kicked by another connection of the device (exit 1),\n" +
			"or when the server refuses the session for good (exit 1).",
		Flags: append(append([]cli.Flag{
			&cli.StringFlag{Name: "device", Usage: "device id (required)"},
			&cli.StringFlag{Name: "token", Usage: "device token (default: minted from the app's secret before every connect)"},
			&cli.BoolFlag{Name: "lz4", Usage: "offer lz4-compressed batches"},
			&cli.StringFlag{Name: "epoch", Usage: "resume cursor: inbox epoch"},
			&cli.Uint64Flag{Name: "seq", Usage: "resume cursor: last sequence number handled (needs --epoch)"},
			&cli.StringSliceFlag{Name: "business", Usage: "business multiplexed on the connection (repeatable)"},
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
	p := &framePrinter{w: e.stdout, json: format == formatJSON}
	ctx := c.Context
	cfg := client.Config{
		URL: url, App: app, Device: device,
		Platform: "pushctl", Version: "listen",
		Businesses: c.StringSlice("business"),
		LZ4:        c.Bool("lz4"),
		Cursor:     client.Cursor{Epoch: c.String("epoch"), Seq: c.Uint64("seq")},
		OnWelcome:  p.welcome,
		OnMessage:  p.push,
		OnControl:  p.control,
		OnGap:      p.gap,
		OnDisconnect: func(err error) {
			if ctx.Err() != nil || errors.Is(err, client.ErrKicked) {
				return
			}
			fmt.Fprintf(e.stderr, "pushctl listen: disconnected: %v\n", err)
		},
	}
	if tok := c.String("token"); tok != "" {
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
		mint := mintFunc(app, keyID, secret)
		if _, err := mint(device); err != nil {
			return usagef("cannot mint a token for %q: %v", device, err)
		}
		cfg.TokenFunc = func(context.Context) (string, error) { return mint(device) }
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

// framePrinter prints what the SDK hands over, one line per event. The
// SDK calls it from one goroutine at a time, so it needs no lock.
type framePrinter struct {
	w    io.Writer
	json bool
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
	Group         string  `json:"group,omitempty"`
	Redelivered   bool    `json:"redelivered,omitempty"`
	Payload       *string `json:"payload,omitempty"`
	PayloadBase64 *string `json:"payload_base64,omitempty"`

	// CONTROL (and Priority: for degraded, the highest priority shed)
	Kind       string   `json:"kind,omitempty"`
	Reason     string   `json:"reason,omitempty"`
	Addr       string   `json:"addr,omitempty"`
	Businesses []string `json:"businesses,omitempty"`

	// GAP
	From *uint64 `json:"from,omitempty"`
	To   *uint64 `json:"to,omitempty"`
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

func (p *framePrinter) welcome(w client.Welcome) {
	hb := w.Heartbeat.Milliseconds()
	p.emit(listenEvent{Type: "WELCOME", Session: w.Session, Node: w.Node, HeartbeatMS: &hb, Recovered: &w.Recovered, Epoch: w.Epoch},
		"session="+orDash(w.Session), "node="+orDash(w.Node), "heartbeat="+w.Heartbeat.String(),
		"recovered="+strconv.FormatBool(w.Recovered), "epoch="+orDash(w.Epoch))
}

func (p *framePrinter) push(m client.Message) {
	ev := listenEvent{Type: "PUSH", Seq: &m.Seq, ID: m.ID, Business: m.Business, Priority: m.Priority.String(),
		Group: m.Group, Redelivered: m.Redelivered}
	if !m.Created.IsZero() && m.Created.Unix() > 0 {
		ev.Created = m.Created.UTC().Format(time.RFC3339Nano)
	}
	fields := []string{"seq=" + strconv.FormatUint(m.Seq, 10), "id=" + orDash(m.ID), "business=" + orDash(m.Business),
		"priority=" + m.Priority.String()}
	if m.Group != "" {
		fields = append(fields, "group="+m.Group)
	}
	if m.Redelivered {
		fields = append(fields, "redelivered=true")
	}
	if printable(m.Payload) {
		s := string(m.Payload)
		ev.Payload = &s
		fields = append(fields, "payload="+strconv.Quote(s))
	} else {
		s := base64.StdEncoding.EncodeToString(m.Payload)
		ev.PayloadBase64 = &s
		fields = append(fields, "payload_base64="+s)
	}
	p.emit(ev, fields...)
}

func (p *framePrinter) control(c wire.Control) {
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
