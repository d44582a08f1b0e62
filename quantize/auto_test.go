package quantize

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestAuto runs the recipe search on the digits CNN with short timing
// rounds. The latency budget is set where the choice is decided by size
// (everything fits) and where nothing can fit, so the test does not depend
// on how fast this machine is.
func TestAuto(t *testing.T) {
	needRuntime(t)
	ctx := context.Background()
	fp32 := loadModel(t, "cnn.onnx")
	test := loadDigits(t, "test.csv")
	calib := rebatch(t, calibFile(), 64)[:1]
	ao := AutoOptions{
		Evaluate: accuracy(test), MaxDrop: 0.01, Calibration: calib,
		Request: rebatch(t, "test.csv", 1)[0], Rounds: 1, Round: 10 * time.Millisecond,
		Recipes: []Recipe{DefaultRecipes()[0], {Name: "dynamic", Mode: ModeDynamic}, {Name: "fp16", Mode: ModeFP16}},
	}
	t.Run("smallest within budget", func(t *testing.T) {
		ao := ao
		ao.MaxLatency = 1e6
		res, err := Auto(ctx, fp32, Options{}, ao)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Trials) != 3 {
			t.Fatalf("%d trials, want 3", len(res.Trials))
		}
		smallest := res.Trials[0]
		for _, tr := range res.Trials {
			if tr.Error != "" || !tr.Fits || tr.LatencyNS <= 0 {
				t.Errorf("trial %+v: want a fitting, timed model", tr)
			}
			if tr.Size < smallest.Size {
				smallest = tr
			}
		}
		if res.Chosen != smallest.Recipe || len(res.Model) != smallest.Size {
			t.Errorf("chose %s (%d bytes), want the smallest %s (%d bytes)", res.Chosen, len(res.Model), smallest.Recipe, smallest.Size)
		}
		q := res.ArtifactQuantization("accuracy")
		if q == nil || q.Metrics["latencyRatio"] <= 0 || q.Metrics["sizeRatio"] >= 1 || q.Metrics["accuracyFP32"] != res.Baseline {
			t.Errorf("artifact quantization %+v", q)
		}
		var b strings.Builder
		if err := res.WriteTable(&b); err != nil || !strings.Contains(b.String(), "(chosen)") {
			t.Errorf("table %q (%v)", b.String(), err)
		}
	})
	t.Run("nothing fits", func(t *testing.T) {
		ao := ao
		ao.MaxLatency = 1e-6
		ao.Recipes = ao.Recipes[:1]
		res, err := Auto(ctx, fp32, Options{}, ao)
		if !errors.Is(err, ErrNoRecipeFits) || res == nil || res.Model != nil {
			t.Fatalf("err %v, result %+v: want ErrNoRecipeFits and no model", err, res)
		}
		if !strings.Contains(res.Failure, "static-minmax: latency") || !strings.Contains(res.Failure, "by ") {
			t.Errorf("failure %q does not say which constraint failed by how much", res.Failure)
		}
	})
}
