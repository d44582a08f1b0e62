package wire

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseToken: a bootstrap token parses into a secret and a fingerprint
// prefix that FormatToken joins back into the same token (modulo case and
// surrounding space), or it is refused with ErrInvalid.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"c2VjcmV0LXNlY3JldC1zZWNyZXQ.0011223344556677", " abcdefghijklmnop.AABBCCDDEEFF0011aa\n",
		"a.b.c", ".0011223344556677", "short.0011223344556677", "abcdefghijklmnop.xyz", "abcdefghij klmnop.0011223344556677", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		secret, fp, err := ParseToken(tok)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if len(secret) < 16 || strings.ContainsAny(secret, " \t\r\n.") || len(fp) < FingerprintPrefixLen {
			t.Fatalf("accepted secret %q fingerprint %q", secret, fp)
		}
		if fp != strings.ToLower(fp) || strings.Trim(fp, "0123456789abcdef") != "" {
			t.Fatalf("fingerprint %q is not lower-case hex", fp)
		}
		if got := FormatToken(secret, fp); !strings.HasPrefix(strings.ToLower(strings.TrimSpace(tok)), strings.ToLower(got[:len(secret)])) {
			t.Fatalf("FormatToken(%q, %q) = %q does not round-trip %q", secret, fp, got, tok)
		}
		s2, fp2, err := ParseToken(FormatToken(secret, fp))
		if err != nil || s2 != secret || !strings.HasPrefix(fp, fp2) {
			t.Fatalf("re-parse of the formatted token: %q %q %v", s2, fp2, err)
		}
	})
}
