package protodoc

import (
	"bytes"
	"strings"
	"testing"
)

const sample = "# Doc\n\n## 4. Frames\n\n### 4.4 ACK\n\n" +
	"```hex frame=ACK\n01 04 00 00 00 00 02   header\nae 02                  seq 302\n                       a comment line\n```\n\n" +
	"```json\n{\"seq\": 302}\n```\n\n" +
	"```uvarint\n300     ac 02\n5       85 00     decode-only: non-minimal\n```\n\n" +
	"```token\nsigned  v1.abc\n```\n"

func TestParse_ReadsEveryKind(t *testing.T) {
	d, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Frames) != 1 || d.Frames[0].Name != "4.4#1" || d.Frames[0].Type != "ACK" ||
		!bytes.Equal(d.Frames[0].Bytes, []byte{1, 4, 0, 0, 0, 0, 2, 0xae, 2}) || string(d.Frames[0].Fields) != `{"seq":302}` {
		t.Fatalf("frames %+v", d.Frames)
	}
	if len(d.Uvarints) != 2 || d.Uvarints[0].Value != 300 || d.Uvarints[0].DecodeOnly || !d.Uvarints[1].DecodeOnly {
		t.Fatalf("uvarints %+v", d.Uvarints)
	}
	if d.Token["signed"] != "v1.abc" {
		t.Fatalf("token %v", d.Token)
	}
}

func TestParse_RefusesMalformedExamples(t *testing.T) {
	for name, edit := range map[string][2]string{
		"hex without json":   {"```json\n{\"seq\": 302}\n```\n", ""},
		"prose between":      {"\n\n```json", "\nsome prose\n```json"},
		"comment one space":  {"ae 02                  seq 302", "ae 02 seq 302"},
		"no frame attribute": {"```hex frame=ACK", "```hex"},
		"bad json":           {"{\"seq\": 302}", "{seq: 302}"},
		"unclosed block":     {"```token\nsigned  v1.abc\n```\n", "```token\nsigned  v1.abc\n"},
		"bad uvarint value":  {"300     ac 02", "3x0     ac 02"},
	} {
		md := strings.Replace(sample, edit[0], edit[1], 1)
		if md == sample {
			t.Fatalf("%s: edit did not apply", name)
		}
		if _, err := Parse([]byte(md)); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}
