package tfserving

import (
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// kind is the JSON type of a value.
type kind uint8

const (
	kindNull kind = iota
	kindFalse
	kindTrue
	kindNumber
	kindString
	kindArray
	kindObject
)

// value is a parsed JSON value. Numbers keep their text (decoded per the
// input's data type later); strings hold their decoded bytes.
type value struct {
	kind kind
	text []byte // number text or string contents
	arr  []value
	obj  []member
}

type member struct {
	key string
	val value
}

// get returns the first member named key.
func (v *value) get(key string) (*value, bool) {
	for i := range v.obj {
		if v.obj[i].key == key {
			return &v.obj[i].val, true
		}
	}
	return nil, false
}

// typeName is the JSON type as TF Serving's error messages name it.
func (v *value) typeName() string {
	return [...]string{"Null", "False", "True", "Number", "String", "Array", "Object"}[v.kind]
}

// maxDepth bounds nesting so a hostile body cannot exhaust the stack.
const maxDepth = 64

// parseJSON parses one JSON document. Like TF Serving (rapidjson with
// kParseNanAndInfFlag) it accepts the number tokens NaN, Inf, Infinity,
// -Inf and -Infinity.
func parseJSON(data []byte) (value, error) {
	p := parser{data: data}
	p.space()
	if p.pos == len(p.data) {
		return value{}, fmt.Errorf("JSON Parse error: The document is empty")
	}
	v, err := p.value(0)
	if err != nil {
		return value{}, err
	}
	p.space()
	if p.pos != len(p.data) {
		return value{}, p.fail("The document root must not be followed by other values")
	}
	return v, nil
}

type parser struct {
	data []byte
	pos  int
}

func (p *parser) fail(msg string) error {
	return fmt.Errorf("JSON Parse error: %s at offset: %d", msg, p.pos)
}

func (p *parser) space() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) literal(word string) bool {
	if len(p.data)-p.pos >= len(word) && string(p.data[p.pos:p.pos+len(word)]) == word {
		p.pos += len(word)
		return true
	}
	return false
}

func (p *parser) value(depth int) (value, error) {
	if depth > maxDepth {
		return value{}, p.fail(fmt.Sprintf("Nesting deeper than %d levels", maxDepth))
	}
	if p.pos >= len(p.data) {
		return value{}, p.fail("Invalid value")
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		s, err := p.str()
		return value{kind: kindString, text: s}, err
	case c == 't':
		if p.literal("true") {
			return value{kind: kindTrue}, nil
		}
	case c == 'f':
		if p.literal("false") {
			return value{kind: kindFalse}, nil
		}
	case c == 'n':
		if p.literal("null") {
			return value{kind: kindNull}, nil
		}
	case c == '-' || c == 'N' || c == 'I' || (c >= '0' && c <= '9'):
		return p.number()
	}
	return value{}, p.fail("Invalid value")
}

func (p *parser) object(depth int) (value, error) {
	p.pos++ // {
	v := value{kind: kindObject}
	p.space()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		return v, nil
	}
	for {
		p.space()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return value{}, p.fail("Missing a name for object member")
		}
		k, err := p.str()
		if err != nil {
			return value{}, err
		}
		p.space()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return value{}, p.fail("Missing a colon after a name of object member")
		}
		p.pos++
		p.space()
		mv, err := p.value(depth + 1)
		if err != nil {
			return value{}, err
		}
		v.obj = append(v.obj, member{string(k), mv})
		p.space()
		if p.pos >= len(p.data) {
			return value{}, p.fail("Missing a comma or '}' after an object member")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			return v, nil
		default:
			return value{}, p.fail("Missing a comma or '}' after an object member")
		}
	}
}

func (p *parser) array(depth int) (value, error) {
	p.pos++ // [
	v := value{kind: kindArray}
	p.space()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		return v, nil
	}
	for {
		p.space()
		e, err := p.value(depth + 1)
		if err != nil {
			return value{}, err
		}
		v.arr = append(v.arr, e)
		p.space()
		if p.pos >= len(p.data) {
			return value{}, p.fail("Missing a comma or ']' after an array element")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return v, nil
		default:
			return value{}, p.fail("Missing a comma or ']' after an array element")
		}
	}
}

// number scans a JSON number (or NaN/Infinity token) and keeps its text.
func (p *parser) number() (value, error) {
	start := p.pos
	if p.data[p.pos] == '-' {
		p.pos++
	}
	for _, tok := range [...]string{"Infinity", "Inf", "NaN"} {
		if p.literal(tok) {
			if tok == "NaN" && p.data[start] == '-' {
				p.pos = start
				return value{}, p.fail("Invalid value")
			}
			return value{kind: kindNumber, text: p.data[start:p.pos]}, nil
		}
	}
	digits := func() int {
		n := 0
		for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
			p.pos++
			n++
		}
		return n
	}
	switch {
	case p.pos < len(p.data) && p.data[p.pos] == '0':
		p.pos++
	case digits() == 0:
		return value{}, p.fail("Invalid value")
	}
	if p.pos < len(p.data) && p.data[p.pos] == '.' {
		p.pos++
		if digits() == 0 {
			return value{}, p.fail("Missing fraction part in number")
		}
	}
	if p.pos < len(p.data) && (p.data[p.pos] == 'e' || p.data[p.pos] == 'E') {
		p.pos++
		if p.pos < len(p.data) && (p.data[p.pos] == '+' || p.data[p.pos] == '-') {
			p.pos++
		}
		if digits() == 0 {
			return value{}, p.fail("Missing exponent in number")
		}
	}
	return value{kind: kindNumber, text: p.data[start:p.pos]}, nil
}

// str scans a JSON string; without escapes the result aliases the input.
func (p *parser) str() ([]byte, error) {
	p.pos++ // "
	start := p.pos
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == '"':
			s := p.data[start:p.pos]
			p.pos++
			if !utf8.Valid(s) {
				return nil, p.fail("Invalid encoding in string")
			}
			return s, nil
		case c == '\\':
			return p.strSlow(start)
		case c < 0x20:
			return nil, p.fail("Invalid character in string")
		}
		p.pos++
	}
	return nil, p.fail("Missing a closing quotation mark in string")
}

func (p *parser) strSlow(start int) ([]byte, error) {
	out := append([]byte(nil), p.data[start:p.pos]...)
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == '"':
			p.pos++
			if !utf8.Valid(out) {
				return nil, p.fail("Invalid encoding in string")
			}
			return out, nil
		case c < 0x20:
			return nil, p.fail("Invalid character in string")
		case c != '\\':
			out = append(out, c)
			p.pos++
			continue
		}
		p.pos++ // backslash
		if p.pos >= len(p.data) {
			break
		}
		e := p.data[p.pos]
		p.pos++
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return nil, p.fail("Incorrect hex digit after \\u escape in string")
			}
			if utf16.IsSurrogate(r) {
				var r2 rune = -1
				if p.literal("\\u") {
					if r2, ok = p.hex4(); !ok {
						return nil, p.fail("Incorrect hex digit after \\u escape in string")
					}
				}
				if r = utf16.DecodeRune(r, r2); r == utf8.RuneError {
					return nil, p.fail("The surrogate pair in string is invalid")
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, p.fail("Invalid escape character in string")
		}
	}
	return nil, p.fail("Missing a closing quotation mark in string")
}

func (p *parser) hex4() (rune, bool) {
	if len(p.data)-p.pos < 4 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(p.data[p.pos:p.pos+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	p.pos += 4
	return rune(n), true
}

// appendJSONText writes v back as compact JSON (for error messages).
func appendJSONText(b []byte, v *value, budget int) []byte {
	if len(b) > budget {
		return b
	}
	switch v.kind {
	case kindNull:
		return append(b, "null"...)
	case kindFalse:
		return append(b, "false"...)
	case kindTrue:
		return append(b, "true"...)
	case kindNumber:
		return append(b, v.text...)
	case kindString:
		return appendString(b, v.text)
	case kindArray:
		b = append(b, '[')
		for i := range v.arr {
			if i > 0 {
				b = append(b, ',')
			}
			if b = appendJSONText(b, &v.arr[i], budget); len(b) > budget {
				return append(b, "..."...)
			}
		}
		return append(b, ']')
	default:
		b = append(b, '{')
		for i := range v.obj {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, []byte(v.obj[i].key))
			b = append(b, ':')
			if b = appendJSONText(b, &v.obj[i].val, budget); len(b) > budget {
				return append(b, "..."...)
			}
		}
		return append(b, '}')
	}
}

// jsonText renders v for an error message, truncated.
func jsonText(v *value) string {
	b := appendJSONText(nil, v, 200)
	if len(b) > 200 {
		b = append(b[:200], "..."...)
	}
	return string(b)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 is replaced by
// U+FFFD (callers send binary data as {"b64": ...} instead).
func appendString(b []byte, s []byte) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, "\ufffd"...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
