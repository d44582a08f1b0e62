package update_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/edgefleet/edgefleet/agent/update"
)

// TestRejectAfterHubRevert is what a device set back by the hub does: the
// hub's desired state names the old version and the rolled-back digest;
// the agent activates the old one and rejects the new one, which ends
// exactly as after a rollback by its own watch: unloaded, not a rollback
// target, out of the cache, refused when desired again, and reported.
func TestRejectAfterHubRevert(t *testing.T) {
	rs := startRegistry(t)
	ref1 := push(t, rs, "m", "1", fixture(t, "scale2.onnx"), nil)
	ref2 := push(t, rs, "m", "2", fixture(t, "scale3.onnx"), nil)
	r := startAgent(t, t.TempDir(), nil)
	ctx := context.Background()
	var (
		mu      sync.Mutex
		changes []update.Change
	)
	r.u.OnChange(func(c update.Change) {
		mu.Lock()
		changes = append(changes, c)
		mu.Unlock()
	})
	mustUpdate(t, r, "m", ref1, update.UpdateOptions{})
	res2 := mustUpdate(t, r, "m", ref2, update.UpdateOptions{})
	if err := r.u.Reject(ctx, "m", res2.Digest, "rolled back by the hub"); !errors.Is(err, update.ErrConflict) {
		t.Fatalf("rejecting the active version: %v, want ErrConflict", err)
	}
	mustUpdate(t, r, "m", ref1, update.UpdateOptions{AllowRollback: true})
	if st := r.status(t, "m"); st.Active != "1" || st.Previous != "2" {
		t.Fatalf("after the revert: active %s previous %s", st.Active, st.Previous)
	}
	if ok, _ := r.a.Models().ModelReady("m", "2"); !ok {
		t.Fatal("version 2 not loaded after the revert: the test proves nothing")
	}
	for range 2 { // idempotent
		if err := r.u.Reject(ctx, "m", res2.Digest, "rolled back by the hub"); err != nil {
			t.Fatal(err)
		}
	}
	st := r.status(t, "m")
	if st.Active != "1" || st.Previous != "" || !strings.Contains(st.Rejected[res2.Digest], "hub") {
		t.Fatalf("after reject: active %s previous %q rejected %v", st.Active, st.Previous, st.Rejected)
	}
	if ok, _ := r.a.Models().ModelReady("m", "2"); ok {
		t.Fatal("rejected version 2 still loaded")
	}
	idx, err := r.a.RepositoryIndex(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range idx {
		if e.Name == "m" && e.Version == "2" {
			t.Fatalf("rejected version 2 still in the repository: %+v", e)
		}
	}
	if k, ver := r.scaleOf(t, "m"); k != 2 || ver != "1" {
		t.Fatalf("serves ×%g from %s, want ×2 from 1", k, ver)
	}
	if _, err := r.u.Update(ctx, "m", ref2, update.UpdateOptions{}); !errors.Is(err, update.ErrRefused) {
		t.Fatalf("desiring the rejected version again: %v, want ErrRefused", err)
	}
	mu.Lock()
	defer mu.Unlock()
	kinds := map[string]int{}
	for _, c := range changes {
		kinds[c.Kind]++
	}
	if kinds[update.ChangeRejected] != 1 || kinds[update.ChangeActivated] != 3 || kinds[update.ChangeFailed] != 1 {
		t.Fatalf("changes %v: want 3 activations, 1 rejection (the repeat is no change), 1 refused update", kinds)
	}
}
