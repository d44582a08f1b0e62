package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgefleet/edgefleet/hub/enroll"
	"github.com/edgefleet/edgefleet/hub/store"
)

var _ store.Tokens = (*Tokens)(nil)

// Tokens are the bootstrap tokens in the store's database.
type Tokens struct{ s *Store }

// Tokens returns the store's token table.
func (s *Store) Tokens() *Tokens { return &Tokens{s} }

// Create stores a new token and returns its secret (shown once) and record.
func (t *Tokens) Create(ctx context.Context, opts enroll.TokenOptions) (string, enroll.Token, error) {
	secret, key, tok, err := enroll.NewToken(opts, t.s.now())
	if err != nil {
		return "", enroll.Token{}, err
	}
	if _, err := t.s.pool.Exec(ctx, "INSERT INTO enroll_tokens (hash, doc, expires) VALUES ($1, $2, $3)",
		key, tok, tok.Expires); err != nil {
		return "", enroll.Token{}, fmt.Errorf("pgstore: token: %w", err)
	}
	return secret, tok, nil
}

// Redeem marks a token used by device; of two concurrent redemptions one
// fails (the row lock orders them).
func (t *Tokens) Redeem(ctx context.Context, secret, device string) (enroll.Token, error) {
	key := enroll.HashSecret(secret)
	var tok enroll.Token
	err := pgx.BeginFunc(ctx, t.s.pool, func(tx pgx.Tx) error {
		var err error
		if tok, err = getToken(ctx, tx, key, true); err != nil {
			return err
		}
		now := t.s.now().UTC()
		if err := tok.Usable(now); err != nil {
			return err
		}
		tok.Used, tok.UsedAt, tok.UsedBy = true, now, device
		_, err = tx.Exec(ctx, "UPDATE enroll_tokens SET doc = $2 WHERE hash = $1", key, tok)
		return err
	})
	if err != nil {
		return enroll.Token{}, fmt.Errorf("pgstore: token: %w", err)
	}
	return tok, nil
}

// Peek returns a token's record if it could be redeemed now.
func (t *Tokens) Peek(ctx context.Context, secret string) (enroll.Token, error) {
	tok, err := getToken(ctx, t.s.pool, enroll.HashSecret(secret), false)
	if err == nil {
		err = tok.Usable(t.s.now())
	}
	if err != nil {
		return enroll.Token{}, fmt.Errorf("pgstore: token: %w", err)
	}
	return tok, nil
}

// Release undoes a redemption whose enrollment failed afterwards.
func (t *Tokens) Release(ctx context.Context, secret string) error {
	key := enroll.HashSecret(secret)
	return pgx.BeginFunc(ctx, t.s.pool, func(tx pgx.Tx) error {
		tok, err := getToken(ctx, tx, key, true)
		if err != nil {
			return err
		}
		tok.Used, tok.UsedAt, tok.UsedBy = false, time.Time{}, ""
		_, err = tx.Exec(ctx, "UPDATE enroll_tokens SET doc = $2 WHERE hash = $1", key, tok)
		return err
	})
}

// List returns every stored token record, oldest first.
func (t *Tokens) List(ctx context.Context) ([]enroll.Token, error) {
	rows, err := t.s.pool.Query(ctx, "SELECT doc FROM enroll_tokens ORDER BY doc->>'created', hash")
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[enroll.Token])
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	return out, nil
}

// Prune deletes tokens that expired or were used before cutoff.
func (t *Tokens) Prune(ctx context.Context, cutoff time.Time) (int, error) {
	tag, err := t.s.pool.Exec(ctx, `DELETE FROM enroll_tokens WHERE expires < $1
		OR ((doc->>'used')::boolean AND (doc->>'used_at')::timestamptz < $1)`, cutoff)
	if err != nil {
		return 0, fmt.Errorf("pgstore: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

func getToken(ctx context.Context, q querier, key string, lock bool) (enroll.Token, error) {
	sql := "SELECT doc FROM enroll_tokens WHERE hash = $1"
	if lock {
		sql += " FOR UPDATE"
	}
	var tok enroll.Token
	err := q.QueryRow(ctx, sql, key).Scan(&tok)
	if errors.Is(err, pgx.ErrNoRows) {
		return enroll.Token{}, enroll.ErrTokenUnknown
	}
	return tok, err
}
