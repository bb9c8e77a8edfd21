// Package protodoc reads the machine-readable examples of
// docs/protocol.md, so that tests can hold the document to the code: the
// wire codec's conformance test checks every frame and uvarint example in
// both directions, and the token package checks the worked token example.
//
// The document marks its examples with the info string of fenced code
// blocks:
//
//   - ```hex frame=TYPE [decode-only]``` holds one frame as an annotated hex
//     dump: on each line, hex byte groups (any even number of hex digits,
//     separated by single spaces), then two or more spaces and a comment. A
//     line whose first word is not a hex group is a comment. The next fenced
//     block must be ```json``` and hold the frame's fields (see Frame).
//   - ```uvarint``` holds lines "value  hex  [comment]", columns separated
//     by two or more spaces; a comment starting with "decode-only" marks a
//     form the decoder accepts but the encoder never writes.
//   - ```token``` holds lines "name  value" of the worked token example.
//
// Simplest use:
//
//	d, err := protodoc.Parse(markdown)
//	for _, f := range d.Frames { ... }
package protodoc

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Frame is one frame example.
type Frame struct {
	// Name is "<section>#<n>": the number of the section the example is
	// in and its rank among that section's frame examples, from 1.
	Name string
	// Line is the line of the opening fence, from 1.
	Line int
	// Type is the frame type name of the info string (frame=PUSH).
	Type string
	// DecodeOnly marks an encoding the decoder accepts but the encoder
	// does not produce (trailing bytes, ignored flags, non-minimal
	// uvarints): it is checked in the decode direction only.
	DecodeOnly bool
	// Bytes is the frame the hex dump spells.
	Bytes []byte
	// Fields is the JSON object of the block that follows: the field
	// names of the frame type's table in §4, plus "flags" (the header's
	// flags byte, 0 when absent). Integers above 2^53−1 are decimal
	// strings; bytes fields are strings whose UTF-8 bytes are the value;
	// a BATCH has "frames", a list of objects that carry "type" and
	// their own fields.
	Fields json.RawMessage
}

// Uvarint is one uvarint example.
type Uvarint struct {
	Line       int
	Value      uint64
	Bytes      []byte
	DecodeOnly bool
}

// Doc is what Parse finds.
type Doc struct {
	Frames   []Frame
	Uvarints []Uvarint
	// Token holds the lines of the ```token``` block, by name.
	Token map[string]string
}

var (
	headingRE = regexp.MustCompile(`^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s`)
	columnsRE = regexp.MustCompile(`\s{2,}`)
	hexRE     = regexp.MustCompile(`^(?:[0-9a-fA-F]{2})+$`)
)

// Parse reads the examples of a protocol document.
func Parse(md []byte) (*Doc, error) {
	d := &Doc{}
	lines := strings.Split(strings.ReplaceAll(string(md), "\r\n", "\n"), "\n")
	section := "0"
	counts := map[string]int{}
	var pending *Frame // a hex block waiting for its json block
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if m := headingRE.FindStringSubmatch(line); m != nil {
			section = m[1]
			continue
		}
		if !strings.HasPrefix(line, "```") {
			if pending != nil && strings.TrimSpace(line) != "" {
				return nil, fmt.Errorf("line %d: the hex block of line %d must be followed by a json block", i+1, pending.Line)
			}
			continue
		}
		info := strings.Fields(strings.TrimPrefix(line, "```"))
		start := i
		var body []string
		for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
			body = append(body, lines[i])
		}
		if i == len(lines) {
			return nil, fmt.Errorf("line %d: fenced block not closed", start+1)
		}
		kind := ""
		if len(info) > 0 {
			kind = info[0]
		}
		if pending != nil {
			if kind != "json" {
				return nil, fmt.Errorf("line %d: the hex block of line %d must be followed by a json block", start+1, pending.Line)
			}
			raw := []byte(strings.Join(body, "\n"))
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(raw, &obj); err != nil {
				return nil, fmt.Errorf("line %d: fields of the example at line %d: %w", start+1, pending.Line, err)
			}
			var compact bytes.Buffer
			_ = json.Compact(&compact, raw)
			pending.Fields = compact.Bytes()
			d.Frames = append(d.Frames, *pending)
			pending = nil
			continue
		}
		switch kind {
		case "hex":
			f, err := parseFrameBlock(info[1:], body, start+1)
			if err != nil {
				return nil, err
			}
			counts[section]++
			f.Name = section + "#" + strconv.Itoa(counts[section])
			pending = &f
		case "uvarint":
			for k, l := range body {
				u, err := parseUvarintLine(l, start+2+k)
				if err != nil {
					return nil, err
				}
				d.Uvarints = append(d.Uvarints, u)
			}
		case "token":
			if d.Token != nil {
				return nil, fmt.Errorf("line %d: a second token block", start+1)
			}
			d.Token = map[string]string{}
			for k, l := range body {
				cols := columnsRE.Split(strings.TrimSpace(l), 2)
				if len(cols) != 2 {
					return nil, fmt.Errorf("line %d: want \"name  value\"", start+2+k)
				}
				d.Token[cols[0]] = cols[1]
			}
		}
	}
	if pending != nil {
		return nil, fmt.Errorf("line %d: hex block without its json block", pending.Line)
	}
	return d, nil
}

func parseFrameBlock(attrs, body []string, line int) (Frame, error) {
	f := Frame{Line: line}
	for _, a := range attrs {
		switch {
		case strings.HasPrefix(a, "frame="):
			f.Type = strings.TrimPrefix(a, "frame=")
		case a == "decode-only":
			f.DecodeOnly = true
		default:
			return f, fmt.Errorf("line %d: unknown attribute %q", line, a)
		}
	}
	if f.Type == "" {
		return f, fmt.Errorf("line %d: hex block without frame=TYPE", line)
	}
	for k, l := range body {
		b, err := hexColumn(l)
		if err != nil {
			return f, fmt.Errorf("line %d: %w", line+1+k, err)
		}
		f.Bytes = append(f.Bytes, b...)
	}
	if len(f.Bytes) == 0 {
		return f, fmt.Errorf("line %d: empty hex block", line)
	}
	return f, nil
}

// hexColumn returns the bytes spelled at the start of an annotated hex
// dump line: the groups before the first run of two spaces. A line whose
// first word is not a hex group is a comment.
func hexColumn(l string) ([]byte, error) {
	l = strings.TrimSpace(l)
	words := strings.Fields(columnsRE.Split(l, 2)[0])
	if len(words) == 0 || !hexRE.MatchString(words[0]) {
		return nil, nil
	}
	var out []byte
	for _, w := range words {
		if !hexRE.MatchString(w) {
			return nil, fmt.Errorf("%q is not a hex group (separate the comment by two spaces)", w)
		}
		b, _ := hex.DecodeString(w)
		out = append(out, b...)
	}
	return out, nil
}

func parseUvarintLine(l string, line int) (Uvarint, error) {
	cols := columnsRE.Split(strings.TrimSpace(l), 3)
	if len(cols) < 2 {
		return Uvarint{}, fmt.Errorf("line %d: want \"value  hex  [comment]\"", line)
	}
	v, err := strconv.ParseUint(cols[0], 10, 64)
	if err != nil {
		return Uvarint{}, fmt.Errorf("line %d: value: %w", line, err)
	}
	b, err := hexColumn(cols[1])
	if err != nil || len(b) == 0 {
		return Uvarint{}, fmt.Errorf("line %d: hex %q: %v", line, cols[1], err)
	}
	u := Uvarint{Line: line, Value: v, Bytes: b}
	if len(cols) == 3 && strings.HasPrefix(cols[2], "decode-only") {
		u.DecodeOnly = true
	}
	return u, nil
}
