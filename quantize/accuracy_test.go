package quantize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// logitError returns an evaluator scoring a model by the largest logit
// error against fp32 on in (lower is better).
func logitError(t *testing.T, fp32 []byte, in Batch) Evaluator {
	want := run(t, fp32, in)[0]
	return func(ctx context.Context, model []byte) (float64, error) {
		got := run(t, model, in)[0]
		return maxAbsDiff(got, want), nil
	}
}

func TestSensitivity(t *testing.T) {
	needRuntime(t)
	r := rand.New(rand.NewPCG(31, 32))
	fp32 := smallCNN(t, r, false)
	calib := randBatches(r, 3, 8)
	for _, mode := range []Mode{ModeStatic, ModeDynamic} {
		t.Run(string(mode), func(t *testing.T) {
			var q []byte
			var rep *Report
			var err error
			if mode == ModeStatic {
				q, rep, err = Static(context.Background(), fp32, calib, Options{})
			} else {
				q, rep, err = Dynamic(context.Background(), fp32, Options{})
			}
			if err != nil {
				t.Fatal(err)
			}
			sens, err := Sensitivity(context.Background(), fp32, q, calib, rep)
			if err != nil {
				t.Fatal(err)
			}
			if len(sens) < 2 {
				t.Fatalf("sensitivity for %d nodes: %+v", len(sens), sens)
			}
			for i, s := range sens {
				if i > 0 && s.SQNR < sens[i-1].SQNR {
					t.Fatalf("not sorted by SQNR: %+v", sens)
				}
				if math.IsNaN(s.SQNR) || s.SQNR < 10 || s.Cosine < 0.95 || s.Cosine > 1+1e-9 {
					t.Errorf("node %s: SQNR %.1f dB, cosine %.4f", s.Node, s.SQNR, s.Cosine)
				}
			}
			// An unquantized model has identical outputs: infinite SQNR,
			// encoded as null in JSON.
			same, err := Sensitivity(context.Background(), fp32, fp32, calib, rep)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range same {
				if !math.IsInf(s.SQNR, 1) || s.Cosine < 1-1e-12 {
					t.Errorf("fp32 against itself: %+v", s)
				}
			}
			js, err := json.Marshal(append(same, sens[0]))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(js), `"sqnr_db":null`) || !strings.Contains(string(js), fmt.Sprintf(`"sqnr_db":%v`, sens[0].SQNR)) {
				t.Errorf("JSON %s", js)
			}
		})
	}
}

func TestAccuracyControl(t *testing.T) {
	needRuntime(t)
	r := rand.New(rand.NewPCG(41, 42))
	fp32 := smallCNN(t, r, false)
	calib := randBatches(r, 3, 8)
	test := randBatches(r, 1, 32)[0]
	eval := logitError(t, fp32, test)
	full, _, err := Static(context.Background(), fp32, calib, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fullErr, _ := eval(context.Background(), full)
	if fullErr == 0 {
		t.Fatal("full quantization is exact; the test needs a lossy one")
	}

	t.Run("budget met by moving nodes to float", func(t *testing.T) {
		// A budget of zero cannot be met; it maps what moving nodes buys.
		probe, err := AccuracyControl(context.Background(), fp32, Options{}, AccuracyOptions{
			Evaluate: eval, LowerIsBetter: true, MaxDrop: 0, Calibration: calib,
		})
		if err != nil {
			t.Fatal(err)
		}
		if probe.Met || probe.Drop >= fullErr || len(probe.Float) == 0 {
			t.Fatalf("probe: met %v, best drop %g of %g with float %v", probe.Met, probe.Drop, fullErr, probe.Float)
		}
		if len(probe.Sensitivity) == 0 {
			t.Fatal("no sensitivity ranking")
		}
		// A budget the best plan meets is met, with that plan or a smaller one.
		res, err := AccuracyControl(context.Background(), fp32, Options{}, AccuracyOptions{
			Evaluate: eval, LowerIsBetter: true, MaxDrop: probe.Drop, Calibration: calib,
		})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Met || res.Drop > probe.Drop || len(res.Float) == 0 || len(res.Trials) < 2 || len(res.Float) > len(probe.Float) {
			t.Fatalf("met %v drop %g (budget %g), float %v, trials %+v", res.Met, res.Drop, probe.Drop, res.Float, res.Trials)
		}
		// The returned model is the evaluated plan, and its report agrees.
		if got, _ := eval(context.Background(), res.Model); got != res.Metric {
			t.Fatalf("model scores %g, result says %g", got, res.Metric)
		}
		for _, f := range res.Float {
			for _, q := range res.Report.Quantized {
				if q.Name == f {
					t.Fatalf("node %s is both float and quantized", f)
				}
			}
		}
	})
	t.Run("budget already met", func(t *testing.T) {
		res, err := AccuracyControl(context.Background(), fp32, Options{}, AccuracyOptions{
			Evaluate: eval, LowerIsBetter: true, MaxDrop: fullErr * 2, Calibration: calib, Mode: ModeStatic,
		})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Met || len(res.Trials) != 1 || len(res.Float) != 0 {
			t.Fatalf("met %v, %d trials, float %v", res.Met, len(res.Trials), res.Float)
		}
	})
	t.Run("budget cannot be met", func(t *testing.T) {
		res, err := AccuracyControl(context.Background(), fp32, Options{}, AccuracyOptions{
			Evaluate: eval, LowerIsBetter: true, MaxDrop: 0, Calibration: calib, Mode: ModeDynamic, MaxTrials: 3,
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Met || res.Model == nil || len(res.Trials) < 2 || len(res.Trials) > 4 {
			t.Fatalf("met %v, model %v, %d trials", res.Met, res.Model != nil, len(res.Trials))
		}
		for _, tr := range res.Trials {
			if tr.Drop < res.Drop {
				t.Fatalf("best plan drop %g, but a trial lost only %g", res.Drop, tr.Drop)
			}
		}
	})
	t.Run("bad options", func(t *testing.T) {
		if _, err := AccuracyControl(context.Background(), fp32, Options{}, AccuracyOptions{Calibration: calib}); !errors.Is(err, ErrNoEvaluator) {
			t.Fatalf("no evaluator: %v", err)
		}
		if _, err := AccuracyControl(context.Background(), fp32, Options{}, AccuracyOptions{Evaluate: eval}); !errors.Is(err, ErrEmptyCalibration) {
			t.Fatalf("no calibration: %v", err)
		}
		if _, err := AccuracyControl(context.Background(), fp32, Options{}, AccuracyOptions{Evaluate: eval, Calibration: calib, Mode: "int4"}); !errors.Is(err, ErrInvalidOptions) {
			t.Fatalf("bad mode: %v", err)
		}
	})
}
