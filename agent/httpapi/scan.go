package httpapi

import (
	"encoding/binary"
	"fmt"
	"net/http"
	"unicode/utf16"
	"unicode/utf8"
)

// requestError is a client mistake with its HTTP status; the message is what
// the client sees in {"error": ...}.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// maxNesting bounds how deeply skipped JSON values and tensor data may nest.
const maxNesting = 64

// scanner is a single-pass JSON tokenizer over a complete document. It never
// allocates on the happy path except for the strings it is asked to copy.
type scanner struct {
	b   []byte
	i   int
	str []byte // scratch for strings with escapes
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek skips white space and returns the next byte, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) syntax(what string) error {
	if s.i >= len(s.b) {
		return badRequest("malformed JSON: unexpected end of input, %s", what)
	}
	return badRequest("malformed JSON at offset %d: %s, found %s", s.i, what, describeByte(s.b[s.i]))
}

func describeByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return fmt.Sprintf("%q", rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

func (s *scanner) expect(c byte, what string) error {
	if s.peek() != c {
		return s.syntax(what)
	}
	s.i++
	return nil
}

// nextMember advances to the next member of an object whose '{' has been
// consumed; n is the number of members read so far. It returns the key (valid
// until the next string read) and false at the closing '}'.
func (s *scanner) nextMember(n int) ([]byte, bool, error) {
	c := s.peek()
	if n > 0 {
		if c == '}' {
			s.i++
			return nil, false, nil
		}
		if c != ',' {
			return nil, false, s.syntax("expected ',' or '}' in object")
		}
		s.i++
		c = s.peek()
	} else if c == '}' {
		s.i++
		return nil, false, nil
	}
	if c != '"' {
		return nil, false, s.syntax("expected a string key")
	}
	key, err := s.readString()
	if err != nil {
		return nil, false, err
	}
	if err := s.expect(':', "expected ':' after key"); err != nil {
		return nil, false, err
	}
	s.ws()
	return key, true, nil
}

// nextElem advances to the next element of an array whose '[' has been
// consumed; n is the number of elements read so far. It returns false at the
// closing ']'.
func (s *scanner) nextElem(n int) (bool, error) {
	c := s.peek()
	if c == ']' {
		s.i++
		return false, nil
	}
	if n > 0 {
		if c != ',' {
			return false, s.syntax("expected ',' or ']' in array")
		}
		s.i++
		if s.peek() == ']' {
			return false, s.syntax("expected a value after ','")
		}
	}
	return true, nil
}

// readString reads a JSON string at s.i. The result aliases the input when
// the string has no escapes, otherwise the scratch buffer; either way it is
// only valid until the next call. Bytes are kept as they are (invalid UTF-8 is
// not rewritten), so BYTES elements lose nothing.
func (s *scanner) readString() ([]byte, error) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, s.syntax("expected a string")
	}
	s.i++
	start := s.i
	b := s.b
	for i := start; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			s.i = i + 1
			return b[start:i], nil
		case c == '\\':
			s.str = append(s.str[:0], b[start:i]...)
			s.i = i
			return s.readEscaped()
		case c < 0x20:
			s.i = i
			return nil, s.syntax("control character in string")
		}
	}
	s.i = len(b)
	return nil, s.syntax("unterminated string")
}

func (s *scanner) readEscaped() ([]byte, error) {
	b := s.b
	for s.i < len(b) {
		c := b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.str, nil
		case c < 0x20:
			return nil, s.syntax("control character in string")
		case c != '\\':
			s.str = append(s.str, c)
			s.i++
			continue
		}
		if s.i+1 >= len(b) {
			s.i = len(b)
			return nil, s.syntax("unterminated escape")
		}
		e := b[s.i+1]
		s.i += 2
		switch e {
		case '"', '\\', '/':
			s.str = append(s.str, e)
		case 'b':
			s.str = append(s.str, '\b')
		case 'f':
			s.str = append(s.str, '\f')
		case 'n':
			s.str = append(s.str, '\n')
		case 'r':
			s.str = append(s.str, '\r')
		case 't':
			s.str = append(s.str, '\t')
		case 'u':
			r, ok := s.hex4()
			if !ok {
				return nil, s.syntax("invalid \\u escape")
			}
			if utf16.IsSurrogate(r) {
				// A pair decodes to one rune; a lone half becomes U+FFFD as in encoding/json.
				if s.i+1 < len(b) && b[s.i] == '\\' && b[s.i+1] == 'u' {
					save := s.i
					s.i += 2
					if r2, ok := s.hex4(); ok {
						if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
							s.str = utf8.AppendRune(s.str, d)
							continue
						}
					}
					s.i = save
				}
				r = utf8.RuneError
			}
			s.str = utf8.AppendRune(s.str, r)
		default:
			s.i -= 1
			return nil, s.syntax("invalid escape")
		}
	}
	return nil, s.syntax("unterminated string")
}

func (s *scanner) hex4() (rune, bool) {
	if s.i+4 > len(s.b) {
		return 0, false
	}
	var r rune
	for _, c := range s.b[s.i : s.i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	s.i += 4
	return r, true
}

func isDigit(c byte) bool { return c-'0' < 10 }

// eightDigits parses b[i:i+8] when it is eight ASCII digits, eight at once
// (SWAR, as in Lemire's fast_float parse_eight_digits_unrolled).
func eightDigits(b []byte, i int) (uint64, bool) {
	if len(b)-i < 8 {
		return 0, false
	}
	v := binary.LittleEndian.Uint64(b[i:])
	if (v&0xF0F0F0F0F0F0F0F0)|(((v+0x0606060606060606)&0xF0F0F0F0F0F0F0F0)>>4) != 0x3333333333333333 {
		return 0, false
	}
	const mask = 0x000000FF000000FF
	const mul1 = 100 + 1000000<<32
	const mul2 = 1 + 10000<<32
	v -= 0x3030303030303030
	v = v*10 + v>>8
	v = ((v&mask)*mul1 + (v>>16&mask)*mul2) >> 32
	return v & 0xFFFFFFFF, true
}

// scanNumber reads a JSON number (RFC 8259 grammar) at s.i.
func (s *scanner) scanNumber() (number, error) {
	b := s.b
	i := s.i
	var n number
	if i < len(b) && b[i] == '-' {
		n.neg = true
		i++
	}
	if i >= len(b) {
		s.i = i
		return n, s.syntax("expected a digit")
	}
	nd := 0
	switch c := b[i]; {
	case c == '0':
		i++
	case c >= '1' && c <= '9':
		for ; i < len(b) && isDigit(b[i]); i++ {
			if nd <= 19-8 {
				if v, ok := eightDigits(b, i); ok {
					n.mant = n.mant*1e8 + v
					nd += 8
					i += 7
					continue
				}
			}
			if nd < 19 {
				n.mant = n.mant*10 + uint64(b[i]-'0')
				nd++
			} else {
				n.exp++
				if b[i] != '0' {
					n.trunc = true
				}
			}
		}
	default:
		s.i = i
		return n, s.syntax("expected a value")
	}
	n.integer = true
	if i < len(b) && b[i] == '.' {
		n.integer = false
		i++
		start := i
		for ; i < len(b) && isDigit(b[i]); i++ {
			if nd > 0 && nd <= 19-8 {
				if v, ok := eightDigits(b, i); ok {
					n.mant = n.mant*1e8 + v
					nd += 8
					n.exp -= 8
					i += 7
					continue
				}
			}
			d := b[i] - '0'
			switch {
			case nd == 0 && d == 0:
				n.exp--
			case nd < 19:
				n.mant = n.mant*10 + uint64(d)
				nd++
				n.exp--
			case d != 0:
				n.trunc = true
			}
		}
		if i == start {
			s.i = i
			return n, s.syntax("expected a digit after '.'")
		}
	}
	if i < len(b) && b[i]|0x20 == 'e' {
		n.integer = false
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		start := i
		e := 0
		for ; i < len(b) && isDigit(b[i]); i++ {
			if e < 1e6 {
				e = e*10 + int(b[i]-'0')
			}
		}
		if i == start {
			s.i = i
			return n, s.syntax("expected a digit in exponent")
		}
		if eneg {
			e = -e
		}
		n.exp += e
	}
	s.i = i
	return n, nil
}

// literal consumes word if the input continues with it.
func (s *scanner) literal(word string) bool {
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return true
	}
	return false
}

// nonFinite consumes a bare NaN, Infinity, Inf, -Infinity or -Inf token (the
// forms rapidjson's kParseNanAndInfFlag accepts, as Triton does).
func (s *scanner) nonFinite() (float64, bool) {
	switch {
	case s.literal("NaN"):
		return nan, true
	case s.literal("Infinity"), s.literal("Inf"):
		return inf, true
	case s.literal("-Infinity"), s.literal("-Inf"):
		return -inf, true
	}
	return 0, false
}

// skipValue skips one JSON value of any kind.
func (s *scanner) skipValue(depth int) error {
	if depth > maxNesting {
		return s.syntax("nesting too deep")
	}
	switch c := s.peek(); c {
	case '"':
		_, err := s.readString()
		return err
	case '{':
		s.i++
		for n := 0; ; n++ {
			_, ok, err := s.nextMember(n)
			if err != nil || !ok {
				return err
			}
			if err := s.skipValue(depth + 1); err != nil {
				return err
			}
		}
	case '[':
		s.i++
		for n := 0; ; n++ {
			ok, err := s.nextElem(n)
			if err != nil || !ok {
				return err
			}
			if err := s.skipValue(depth + 1); err != nil {
				return err
			}
		}
	case 't':
		if s.literal("true") {
			return nil
		}
	case 'f':
		if s.literal("false") {
			return nil
		}
	case 'n':
		if s.literal("null") {
			return nil
		}
	default:
		if _, ok := s.nonFinite(); ok {
			return nil
		}
		_, err := s.scanNumber()
		return err
	}
	return s.syntax("expected a value")
}
