package agent_test

import (
	"context"
	"testing"

	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/internal/testenv"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/hil-tests/loadgen"
)

// BenchmarkDigitsCNN measures one digits CNN request end to end over each
// protocol against a real agent on loopback, next to the in-process session.
func BenchmarkDigitsCNN(b *testing.B) {
	cnn := testenv.Fixture(b, "digits/cnn.onnx")
	test := loadDigits(b, "test.csv")
	r := startAgent(b, config.Config{}, map[string][]byte{"digits-cnn": cnn})
	req := test.batch(0, 1)
	sess, err := runtime.NewSession(cnn, runtime.Config{IntraOpThreads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	b.Run("in-process", func(b *testing.B) {
		for b.Loop() {
			if _, err := sess.Run(req.Inputs, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	grpcT, _ := loadgen.GRPCTarget(r.grpc, "digits-cnn", "", req, true)
	restBin, _ := loadgen.RESTTarget(r.rest, "digits-cnn", "", req, true)
	restJSON, _ := loadgen.RESTTarget(r.rest, "digits-cnn", "", req, false)
	for _, tc := range []struct {
		name string
		t    loadgen.Target
	}{{"grpc", grpcT}, {"rest-binary", restBin}, {"rest-json", restJSON}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				if err := tc.t(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
