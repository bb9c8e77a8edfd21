package wire_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/protodoc"
)

// The conformance test holds docs/protocol.md to this codec: every frame
// and uvarint example of the document is decoded and compared with the
// fields written next to it, and the fields are encoded and compared with
// the example's bytes. The same examples are kept in
// testdata/conformance.json for SDKs in other languages; the test fails
// when that file no longer matches the document.

var update = flag.Bool("update", false, "rewrite testdata/conformance.json from docs/protocol.md")

const (
	docPath     = "../../docs/protocol.md"
	fixturePath = "testdata/conformance.json"
)

func readDoc(t *testing.T) (*protodoc.Doc, []byte) {
	t.Helper()
	md, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	d, err := protodoc.Parse(md)
	if err != nil {
		t.Fatalf("%s: %v", docPath, err)
	}
	return d, md
}

// TestConformance_DocExamples checks every example of docs/protocol.md
// against the codec, in both directions.
func TestConformance_DocExamples(t *testing.T) {
	d, _ := readDoc(t)
	for _, ex := range d.Frames {
		if err := checkFrame(ex); err != nil {
			t.Errorf("%s example %s (line %d): %v", docPath, ex.Name, ex.Line, err)
		}
	}
	for _, u := range d.Uvarints {
		if err := checkUvarint(u); err != nil {
			t.Errorf("%s uvarint example at line %d: %v", docPath, u.Line, err)
		}
	}
}

// TestConformance_DocCoversEveryFrame: every frame type has an example,
// and so do PUSH's flags, an lz4 BATCH and a device-side BATCH.
func TestConformance_DocCoversEveryFrame(t *testing.T) {
	d, _ := readDoc(t)
	seen := map[string]bool{}
	for _, ex := range d.Frames {
		if len(ex.Bytes) < wire.HeaderLen {
			continue
		}
		typ := wire.Type(ex.Bytes[1]).String()
		seen[typ] = true
		seen[fmt.Sprintf("%s flags %#02x", typ, ex.Bytes[2])] = true
		if typ == "BATCH" && !ex.DecodeOnly {
			f, _, err := wire.Decode(ex.Bytes, wire.CeilingMaxFrame)
			if err == nil {
				_ = f.(*wire.Batch).Each(wire.CeilingMaxFrame, func(inner wire.Frame) error {
					seen["BATCH holding "+inner.Type().String()] = true
					return nil
				})
			}
		}
	}
	want := []string{"PUSH flags 0x00", "PUSH flags 0x01", "PUSH flags 0x02", "PUSH flags 0x03", "PUSH flags 0x04",
		"HELLO flags 0x01", "BATCH flags 0x00", "BATCH flags 0x01", "BATCH holding ACK"}
	for typ := wire.TypeHello; typ <= wire.TypeCatchUp; typ++ {
		want = append(want, typ.String())
	}
	for _, w := range want {
		if !seen[w] {
			t.Errorf("%s has no example of %s", docPath, w)
		}
	}
	if len(d.Uvarints) == 0 {
		t.Errorf("%s has no uvarint examples", docPath)
	}
	if len(d.Token) == 0 {
		t.Errorf("%s has no token example", docPath)
	}
}

// TestConformance_FixtureMatchesDoc: testdata/conformance.json, the
// examples for other languages' SDKs, is generated from the document and
// must not go stale. Regenerate it with
//
//	go test ./appliance/wire -run TestConformance_FixtureMatchesDoc -update
func TestConformance_FixtureMatchesDoc(t *testing.T) {
	d, _ := readDoc(t)
	want, err := fixture(d)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(fixturePath, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(fixturePath)
	if err != nil {
		t.Fatalf("%v (generate it with -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: docs/protocol.md changed; regenerate it with\n\tgo test ./appliance/wire -run TestConformance_FixtureMatchesDoc -update", fixturePath)
	}
}

// TestConformance_DetectsEditedExamples makes sure the check is not
// vacuous: an example whose bytes or fields are edited fails it.
func TestConformance_DetectsEditedExamples(t *testing.T) {
	d, _ := readDoc(t)
	for _, ex := range d.Frames {
		// Change the first byte of the body, and the last one unless the
		// example ends with bytes a decoder ignores.
		at := []int{wire.HeaderLen}
		if !ex.DecodeOnly {
			at = append(at, len(ex.Bytes)-1)
		}
		for _, i := range at {
			bad := ex
			bad.Bytes = append([]byte(nil), ex.Bytes...)
			bad.Bytes[i] ^= 0x01
			if checkFrame(bad) == nil {
				t.Errorf("example %s still passes with byte %d changed", ex.Name, i)
			}
		}
		// Change one field value.
		var obj map[string]any
		_ = json.Unmarshal(ex.Fields, &obj)
		changed := false
		for k, v := range obj {
			if k == "flags" {
				continue
			}
			switch v := v.(type) {
			case string:
				obj[k] = v + "x"
			case float64:
				obj[k] = v + 1
			case bool:
				obj[k] = !v
			default:
				continue
			}
			changed = true
			break
		}
		if !changed {
			continue
		}
		bad := ex
		bad.Fields, _ = json.Marshal(obj)
		if checkFrame(bad) == nil {
			t.Errorf("example %s still passes with fields %s", ex.Name, bad.Fields)
		}
	}
	md, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	// An edit to the document's text itself: the PUSH example's seq.
	edited := bytes.Replace(md, []byte("ad 02                  seq       301"), []byte("ae 02                  seq       301"), 1)
	if bytes.Equal(edited, md) {
		t.Fatal("the PUSH example of §4.3 was not found; update this test")
	}
	ed, err := protodoc.Parse(edited)
	if err != nil {
		t.Fatal(err)
	}
	failed := false
	for _, ex := range ed.Frames {
		failed = failed || checkFrame(ex) != nil
	}
	if !failed {
		t.Fatal("a document with an edited PUSH example passes the check")
	}
}

// checkFrame checks one example: its bytes decode to exactly one frame
// equal to the fields, and, unless it is decode-only, the fields encode
// to exactly its bytes.
func checkFrame(ex protodoc.Frame) error {
	want, flags, err := frameFromJSON(ex.Type, ex.Fields)
	if err != nil {
		return fmt.Errorf("fields: %w", err)
	}
	if len(ex.Bytes) < wire.HeaderLen {
		return fmt.Errorf("%d bytes, shorter than a header", len(ex.Bytes))
	}
	if got := wire.Type(ex.Bytes[1]).String(); got != ex.Type {
		return fmt.Errorf("type byte %#02x is %s, the example says %s", ex.Bytes[1], got, ex.Type)
	}
	if ex.Bytes[2] != flags {
		return fmt.Errorf("flags byte %#02x, fields say %#02x", ex.Bytes[2], flags)
	}
	got, n, err := wire.Decode(ex.Bytes, wire.CeilingMaxFrame)
	if err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if n != len(ex.Bytes) {
		return fmt.Errorf("decode took %d of %d bytes", n, len(ex.Bytes))
	}
	if err := sameFrame(got, want); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if ex.DecodeOnly {
		return nil
	}
	enc := encode(want, flags)
	if !bytes.Equal(enc, ex.Bytes) {
		return fmt.Errorf("encode: fields give\n\t%x\nthe example has\n\t%x", enc, ex.Bytes)
	}
	return nil
}

// encode is the codec's encoding of f: Append, or AppendBatch with
// compression when the flags say lz4.
func encode(f wire.Frame, flags uint8) []byte {
	if b, ok := f.(*wire.Batch); ok {
		return wire.AppendBatch(nil, b.Frames, flags&wire.FlagLZ4 != 0)
	}
	return wire.Append(nil, f)
}

// sameFrame compares two frames; a BATCH by its inner frames.
func sameFrame(got, want wire.Frame) error {
	gb, ok1 := got.(*wire.Batch)
	wb, ok2 := want.(*wire.Batch)
	if ok1 && ok2 {
		if !bytes.Equal(gb.Frames, wb.Frames) {
			return fmt.Errorf("BATCH holds\n\t%x\nfields give\n\t%x", gb.Frames, wb.Frames)
		}
		return nil
	}
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("got %+v, fields give %+v", got, want)
	}
	return nil
}

func checkUvarint(u protodoc.Uvarint) error {
	v, n := binary.Uvarint(u.Bytes)
	r := wire.NewFieldReader(u.Bytes)
	rv := r.Uvarint()
	if n != len(u.Bytes) || v != u.Value || r.Err() != nil || rv != u.Value {
		return fmt.Errorf("%x decodes to %d (%d bytes, err %v), want %d", u.Bytes, v, n, r.Err(), u.Value)
	}
	if !u.DecodeOnly {
		if enc := binary.AppendUvarint(nil, u.Value); !bytes.Equal(enc, u.Bytes) {
			return fmt.Errorf("%d encodes to %x, want %x", u.Value, enc, u.Bytes)
		}
	}
	return nil
}

// frameFromJSON builds the frame an example's fields describe, and the
// header flags they give. Every field of the type must be present, and
// nothing else.
func frameFromJSON(typ string, raw json.RawMessage) (wire.Frame, uint8, error) {
	var obj map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		return nil, 0, err
	}
	r := &fieldSet{obj: obj}
	flags := uint8(0)
	if _, ok := obj["flags"]; ok {
		flags = r.u8("flags")
	}
	var f wire.Frame
	switch typ {
	case "HELLO":
		h := &wire.Hello{Token: r.str("token"), App: r.str("app"), Device: r.str("device"), Platform: r.str("platform"),
			Version: r.str("version"), Businesses: r.strs("businesses"), Epoch: r.str("epoch"), Seq: r.uint("seq"), Caps: r.uint("caps")}
		if flags&wire.FlagGroupCursors != 0 {
			var cursors []struct {
				Group string      `json:"group"`
				Epoch string      `json:"epoch"`
				Seq   json.Number `json:"seq"`
			}
			r.get("group_cursors", &cursors)
			for _, c := range cursors {
				seq, err := strconv.ParseUint(c.Seq.String(), 10, 64)
				if err != nil && r.err == nil {
					r.err = fmt.Errorf("field \"group_cursors\": seq: %w", err)
				}
				h.GroupCursors = append(h.GroupCursors, wire.GroupCursor{Group: c.Group, Epoch: c.Epoch, Seq: seq})
			}
		}
		f = h
	case "WELCOME":
		f = &wire.Welcome{Session: r.str("session"), Node: r.str("node"), Heartbeat: r.uint("heartbeat"), Recovered: r.bool("recovered"),
			Epoch: r.str("epoch"), Acked: r.uint("acked"), MaxFrame: r.uint("max_frame"), Caps: r.uint("caps")}
	case "PUSH":
		p := &wire.Push{Seq: r.uint("seq"), ID: r.str("id"), Business: r.str("business"), Priority: wire.Priority(r.u8("priority")),
			Created: r.uint("created"), Group: r.str("group"), Payload: r.bytes("payload"),
			Redelivery: flags&wire.FlagRedelivery != 0, Gap: flags&wire.FlagGap != 0}
		if flags&wire.FlagGroupSeq != 0 {
			p.GroupEpoch, p.GroupSeq = r.str("group_epoch"), r.uint("group_seq")
		}
		f = p
	case "ACK":
		f = &wire.Ack{Seq: r.uint("seq")}
	case "PING":
		f = &wire.Ping{Time: r.uint("time")}
	case "PONG":
		f = &wire.Pong{Time: r.uint("time")}
	case "UP":
		f = &wire.Up{Request: r.uint("request"), Business: r.str("business"), Payload: r.bytes("payload")}
	case "UP_REPLY":
		f = &wire.UpReply{Request: r.uint("request"), Code: r.code("code"), Payload: r.bytes("payload")}
	case "JOIN":
		f = &wire.Join{Request: r.uint("request"), Group: r.str("group")}
	case "LEAVE":
		f = &wire.Leave{Request: r.uint("request"), Group: r.str("group")}
	case "CONTROL":
		f = &wire.Control{Kind: wire.ControlKind(r.u8("kind")), Priority: wire.Priority(r.u8("priority")), Reason: r.str("reason"),
			Addr: r.str("addr"), Businesses: r.strs("businesses")}
	case "ERROR":
		f = &wire.Error{Code: r.code("code"), Request: r.uint("request"), Message: r.str("message")}
	case "CATCHUP":
		f = &wire.CatchUp{Group: r.str("group"), Recovered: r.bool("recovered"), Epoch: r.str("epoch"), Seq: r.uint("seq")}
	case "BATCH":
		var inner []json.RawMessage
		r.get("frames", &inner)
		var frames []byte
		for i, in := range inner {
			var head struct{ Type string }
			if err := json.Unmarshal(in, &head); err != nil {
				return nil, 0, fmt.Errorf("frames[%d]: %w", i, err)
			}
			var obj map[string]json.RawMessage
			_ = json.Unmarshal(in, &obj)
			delete(obj, "type")
			rest, _ := json.Marshal(obj)
			g, gflags, err := frameFromJSON(head.Type, rest)
			if err != nil {
				return nil, 0, fmt.Errorf("frames[%d] (%s): %w", i, head.Type, err)
			}
			if _, ok := g.(*wire.Batch); ok {
				return nil, 0, fmt.Errorf("frames[%d]: a BATCH inside a BATCH", i)
			}
			if gflags != 0 && g.Type() != wire.TypePush {
				return nil, 0, fmt.Errorf("frames[%d]: flags on %s", i, head.Type)
			}
			frames = append(frames, encode(g, gflags)...)
		}
		f = &wire.Batch{Frames: frames}
	default:
		return nil, 0, fmt.Errorf("unknown frame type %q", typ)
	}
	if r.err != nil {
		return nil, 0, r.err
	}
	if len(r.obj) > 0 {
		var extra []string
		for k := range r.obj {
			extra = append(extra, k)
		}
		return nil, 0, fmt.Errorf("fields %v are not fields of %s", extra, typ)
	}
	return f, flags, nil
}

// fieldSet takes fields out of a JSON object one by one; the first
// missing or mistyped field sticks in err, and whatever is left in obj
// afterwards is a field the type does not have.
type fieldSet struct {
	obj map[string]json.RawMessage
	err error
}

func (r *fieldSet) get(name string, v any) {
	raw, ok := r.obj[name]
	delete(r.obj, name)
	if r.err != nil {
		return
	}
	if !ok {
		r.err = fmt.Errorf("field %q missing", name)
		return
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		r.err = fmt.Errorf("field %q: %w", name, err)
	}
}

func (r *fieldSet) str(name string) string {
	var s string
	r.get(name, &s)
	return s
}

func (r *fieldSet) strs(name string) []string {
	var s []string
	r.get(name, &s)
	if len(s) == 0 {
		return nil
	}
	return s
}

func (r *fieldSet) bytes(name string) []byte {
	if s := r.str(name); s != "" {
		return []byte(s)
	}
	return nil
}

func (r *fieldSet) bool(name string) bool {
	var b bool
	r.get(name, &b)
	return b
}

// uint reads a uint64: a JSON number, or a decimal string for values
// above 2^53−1, which a JSON number cannot carry exactly everywhere.
func (r *fieldSet) uint(name string) uint64 {
	raw := r.obj[name]
	var n json.Number
	r.get(name, &n)
	if r.err != nil {
		return 0
	}
	v, err := strconv.ParseUint(n.String(), 10, 64)
	if err != nil {
		r.err = fmt.Errorf("field %q: %w", name, err)
	}
	if v > 1<<53-1 && !strings.HasPrefix(string(raw), `"`) {
		// Kept as a number it would read differently in JavaScript.
		r.err = fmt.Errorf("field %q: %d is above 2^53-1: write it as a string", name, v)
	}
	return v
}

func (r *fieldSet) u8(name string) uint8 {
	v := r.uint(name)
	if v > 0xff && r.err == nil {
		r.err = fmt.Errorf("field %q: %d is not a byte", name, v)
	}
	return uint8(v)
}

func (r *fieldSet) code(name string) wire.Code {
	v := r.uint(name)
	if v > 0xffff && r.err == nil {
		r.err = fmt.Errorf("field %q: %d is not a code", name, v)
	}
	return wire.Code(v)
}

// fixture is testdata/conformance.json: the document's examples in a form
// any language reads.
func fixture(d *protodoc.Doc) ([]byte, error) {
	type frameJSON struct {
		Name       string          `json:"name"`
		Type       string          `json:"type"`
		Hex        string          `json:"hex"`
		DecodeOnly bool            `json:"decode_only,omitempty"`
		Fields     json.RawMessage `json:"fields"`
	}
	type uvarintJSON struct {
		Value      string `json:"value"`
		Hex        string `json:"hex"`
		DecodeOnly bool   `json:"decode_only,omitempty"`
	}
	out := struct {
		Comment     []string          `json:"comment"`
		Frames      []frameJSON       `json:"frames"`
		Uvarints    []uvarintJSON     `json:"uvarints"`
		Token       map[string]string `json:"token"`
		Conventions map[string]string `json:"conventions"`
	}{
		Comment: []string{
			"Generated from docs/protocol.md by TestConformance_FixtureMatchesDoc in appliance/wire; do not edit.",
			"Regenerate: go test ./appliance/wire -run TestConformance_FixtureMatchesDoc -update",
		},
		Conventions: map[string]string{
			"name":        "<section of docs/protocol.md>#<rank of the example in that section>",
			"hex":         "the whole frame, header included, lowercase, no spaces",
			"decode_only": "decode hex and compare with fields; do not expect fields to encode to hex (trailing bytes, ignored flags, non-minimal uvarints)",
			"fields":      "the field names of the frame type's table in §4; flags is the header's flags byte (0 when absent)",
			"integers":    "numbers, or decimal strings when above 2^53-1 (use BigInt)",
			"bytes":       "payload fields are strings whose UTF-8 bytes are the value",
			"BATCH":       "frames lists the inner frames, each with its type; an lz4 BATCH (flags 1) holds the block pierrec/lz4 v4 writes: another compressor may write another valid block, so check those by decoding and by a round trip through your own compressor",
			"uvarints":    "value is a decimal string",
		},
		Token: d.Token,
	}
	for _, f := range d.Frames {
		out.Frames = append(out.Frames, frameJSON{Name: f.Name, Type: f.Type, Hex: hex.EncodeToString(f.Bytes), DecodeOnly: f.DecodeOnly, Fields: f.Fields})
	}
	for _, u := range d.Uvarints {
		out.Uvarints = append(out.Uvarints, uvarintJSON{Value: strconv.FormatUint(u.Value, 10), Hex: hex.EncodeToString(u.Bytes), DecodeOnly: u.DecodeOnly})
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
