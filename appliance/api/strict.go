package api

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"
)

// Strict JSON bodies, for the push API and the admin API alike.
// encoding/json on its own takes a key given twice (the last one wins)
// and matches field names regardless of case, so {"app":"noapp",
// "APP":"dev"} would push as app dev; it also turns invalid UTF-8 into
// U+FFFD without a word. DecodeStrict refuses all three before it
// decodes. Both APIs' handlers read every body with ReadBody and
// DecodeStrict.

// maxJSONDepth bounds how deeply a body may nest objects and arrays; the
// bodies the APIs take nest two levels at most.
const maxJSONDepth = 32

// DecodeStrict parses body, which must be exactly one JSON value, into v
// (a pointer). It refuses, with an error saying where:
//   - bytes that are not UTF-8, a syntax error, or anything after the value;
//   - a key given twice in one object, at any depth (compared after
//     unescaping, so "a" and "\u0061" are the same key);
//   - a key that names no field of the struct it is decoded into, with
//     names compared exactly: "App" is not "app";
//   - a value of the wrong type (encoding/json's own message).
func DecodeStrict(body []byte, v any) error {
	if !utf8.Valid(body) {
		return errors.New("not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := checkJSON(dec, reflect.TypeOf(v), "", 0); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return errors.New("unexpected end of JSON input")
		}
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	// The walk proved the shape; what is left is the types.
	dec = json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// checkJSON reads one value from dec and checks its objects' keys
// against t, the Go type it will be decoded into (nil: any keys, checked
// for duplicates only). path names the value in errors.
func checkJSON(dec *json.Decoder, t reflect.Type, path string, depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil // a scalar: its type is the decoder's business
	}
	if depth >= maxJSONDepth {
		return fmt.Errorf("nested deeper than %d levels", maxJSONDepth)
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && (reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler)) {
		t = nil // a type that reads its own JSON: keys are its business
	}
	switch d {
	case '{':
		var fields map[string]reflect.Type
		var elem reflect.Type
		if t != nil {
			switch t.Kind() {
			case reflect.Struct:
				fields = jsonFields(t)
			case reflect.Map:
				elem = t.Elem()
			}
		}
		seen := map[string]struct{}{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ := kt.(string)
			if _, dup := seen[key]; dup {
				return fmt.Errorf("key %q given twice", path+key)
			}
			seen[key] = struct{}{}
			ft := elem
			if fields != nil {
				var known bool
				if ft, known = fields[key]; !known {
					return unknownField(path+key, key, fields)
				}
			}
			if err := checkJSON(dec, ft, path+key+".", depth+1); err != nil {
				return err
			}
		}
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := checkJSON(dec, elem, fmt.Sprintf("%s%d.", path, i), depth+1); err != nil {
				return err
			}
		}
	}
	_, err = dec.Token() // the closing delimiter
	return err
}

// unknownField says that key is not a field, and which one it resembles
// when only its case differs.
func unknownField(name, key string, fields map[string]reflect.Type) error {
	for f := range fields {
		if strings.EqualFold(f, key) {
			return fmt.Errorf("unknown field %q (field names are case-sensitive: %q)", name, f)
		}
	}
	return fmt.Errorf("unknown field %q", name)
}

var jsonFieldCache sync.Map // reflect.Type → map[string]reflect.Type

// jsonFields returns the JSON names of a struct's fields, as
// encoding/json decodes them: the json tag's name or the Go name,
// exported fields only, "-" skipped, the fields of an embedded struct
// without a tag promoted (the outer struct's own fields win a clash).
func jsonFields(t reflect.Type) map[string]reflect.Type {
	if f, ok := jsonFieldCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	out := map[string]reflect.Type{}
	var embedded []reflect.Type
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				embedded = append(embedded, ft)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	for _, et := range embedded {
		for name, ft := range jsonFields(et) {
			if _, taken := out[name]; !taken {
				out[name] = ft
			}
		}
	}
	jsonFieldCache.Store(t, out)
	return out
}
