package enroll

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/hub/hubdb"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// Token errors; test with errors.Is. All of them mean "enrollment refused"
// (HTTP 401).
var (
	ErrTokenUnknown = errors.New("unknown bootstrap token")
	ErrTokenUsed    = errors.New("bootstrap token already used")
	ErrTokenExpired = errors.New("bootstrap token expired")
)

// HashSecret is the key a token is stored under: the SHA-256 of its
// secret, in hex. Token stores never keep the secret itself.
func HashSecret(secret string) string { return hashSecret(secret) }

// DefaultTokenTTL is how long a token stays valid unless told otherwise.
const DefaultTokenTTL = 24 * time.Hour

// bucketTokens is enroll.tokens in the hub's file (package hubdb).
var bucketTokens = hubdb.EnrollTokens

// Token is a bootstrap token's stored record. The secret itself is never
// stored, only its SHA-256.
type Token struct {
	// ID is the first 12 hex digits of the secret's hash, for listings and
	// logs.
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	// DeviceID binds the token to one device id; "" lets the enrolling
	// agent ask for one. Only a bound token may re-enroll an existing
	// device.
	DeviceID string `json:"device_id,omitempty"`
	// Labels are given to the device at enrollment (they win over labels
	// the agent asks for).
	Labels map[string]string `json:"labels,omitempty"`
	Used   bool              `json:"used,omitempty"`
	UsedAt time.Time         `json:"used_at,omitzero"`
	UsedBy string            `json:"used_by,omitempty"`
}

// TokenOptions shape a new token. Zero values mean DefaultTokenTTL, no
// device binding and no labels.
type TokenOptions struct {
	TTL      time.Duration     `json:"ttl,omitempty"`
	DeviceID string            `json:"device_id,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
}

// Tokens stores one-time bootstrap tokens in bbolt. It is safe for
// concurrent use.
type Tokens struct {
	db  *bolt.DB
	now func() time.Time
}

// NewTokens creates the token bucket in db if needed.
func NewTokens(db *bolt.DB) (*Tokens, error) {
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketTokens)
		return err
	}); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	return &Tokens{db: db, now: time.Now}, nil
}

// Create stores a new token and returns its secret (shown once) and record.
func (t *Tokens) Create(ctx context.Context, opts TokenOptions) (string, Token, error) {
	if err := ctx.Err(); err != nil {
		return "", Token{}, err
	}
	secret, key, tok, err := NewToken(opts, t.now())
	if err != nil {
		return "", Token{}, err
	}
	b, err := json.Marshal(tok)
	if err != nil {
		return "", Token{}, err
	}
	if err := t.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTokens).Put([]byte(key), b)
	}); err != nil {
		return "", Token{}, fmt.Errorf("enroll: %w", err)
	}
	return secret, tok, nil
}

// NewToken checks opts and makes a token: its secret (shown once), the key
// a store keeps it under (HashSecret of the secret) and its record. Token
// stores share it.
func NewToken(opts TokenOptions, now time.Time) (secret, key string, tok Token, err error) {
	if opts.DeviceID != "" {
		if err := wire.ValidateDeviceID(opts.DeviceID); err != nil {
			return "", "", Token{}, err
		}
	}
	if opts.TTL < 0 {
		return "", "", Token{}, fmt.Errorf("enroll: negative token TTL %v: %w", opts.TTL, wire.ErrInvalid)
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTokenTTL
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", "", Token{}, fmt.Errorf("enroll: %w", err)
	}
	secret = base64.RawURLEncoding.EncodeToString(raw[:])
	key = hashSecret(secret)
	now = now.UTC()
	tok = Token{ID: key[:12], Created: now, Expires: now.Add(opts.TTL), DeviceID: opts.DeviceID, Labels: maps.Clone(opts.Labels)}
	return secret, key, tok, nil
}

// Usable is nil when the token can be redeemed at now, else ErrTokenUsed
// or ErrTokenExpired.
func (tok Token) Usable(now time.Time) error {
	if tok.Used {
		return ErrTokenUsed
	}
	if !now.Before(tok.Expires) {
		return ErrTokenExpired
	}
	return nil
}

// Prunable reports whether Prune(cutoff) deletes the token.
func (tok Token) Prunable(cutoff time.Time) bool {
	return tok.Expires.Before(cutoff) || (tok.Used && tok.UsedAt.Before(cutoff))
}

// Redeem marks a token used by device and returns its record. It fails
// for unknown, used and expired tokens; two concurrent redemptions of one
// token cannot both succeed.
func (t *Tokens) Redeem(ctx context.Context, secret, device string) (Token, error) {
	if err := ctx.Err(); err != nil {
		return Token{}, err
	}
	key := []byte(hashSecret(secret))
	var tok Token
	err := t.db.Update(func(tx *bolt.Tx) error {
		var err error
		if tok, err = get(tx, key); err != nil {
			return err
		}
		now := t.now().UTC()
		if err := tok.Usable(now); err != nil {
			return err
		}
		tok.Used, tok.UsedAt, tok.UsedBy = true, now, device
		return put(tx, key, tok)
	})
	if err != nil {
		return Token{}, fmt.Errorf("enroll: token: %w", err)
	}
	return tok, nil
}

// Peek returns a token's record if it could be redeemed now, without
// using it.
func (t *Tokens) Peek(ctx context.Context, secret string) (Token, error) {
	if err := ctx.Err(); err != nil {
		return Token{}, err
	}
	var tok Token
	err := t.db.View(func(tx *bolt.Tx) error {
		var err error
		if tok, err = get(tx, []byte(hashSecret(secret))); err != nil {
			return err
		}
		return tok.Usable(t.now())
	})
	if err != nil {
		return Token{}, fmt.Errorf("enroll: token: %w", err)
	}
	return tok, nil
}

// Release undoes a redemption whose enrollment failed afterwards, so the
// token is not burned by a refused request.
func (t *Tokens) Release(ctx context.Context, secret string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	key := []byte(hashSecret(secret))
	return t.db.Update(func(tx *bolt.Tx) error {
		tok, err := get(tx, key)
		if err != nil {
			return err
		}
		tok.Used, tok.UsedAt, tok.UsedBy = false, time.Time{}, ""
		return put(tx, key, tok)
	})
}

// List returns every stored token record.
func (t *Tokens) List(ctx context.Context) ([]Token, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []Token
	err := t.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTokens).ForEach(func(_, v []byte) error {
			var tok Token
			if err := json.Unmarshal(v, &tok); err != nil {
				return err
			}
			out = append(out, tok)
			return nil
		})
	})
	return out, err
}

// Prune deletes tokens that expired or were used before cutoff.
func (t *Tokens) Prune(ctx context.Context, cutoff time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n := 0
	err := t.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketTokens).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var tok Token
			if err := json.Unmarshal(v, &tok); err != nil {
				return err
			}
			if tok.Prunable(cutoff) {
				if err := c.Delete(); err != nil {
					return err
				}
				n++
			}
		}
		return nil
	})
	return n, err
}

func get(tx *bolt.Tx, key []byte) (Token, error) {
	v := tx.Bucket(bucketTokens).Get(key)
	if v == nil {
		return Token{}, ErrTokenUnknown
	}
	var tok Token
	if err := json.Unmarshal(v, &tok); err != nil {
		return Token{}, err
	}
	return tok, nil
}

func put(tx *bolt.Tx, key []byte, tok Token) error {
	b, err := json.Marshal(tok)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketTokens).Put(key, b)
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}
