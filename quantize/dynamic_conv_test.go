package quantize

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
	"github.com/edgefleet/edgefleet/quantize/quantmath"
)

// TestDynamicConvPerChannel quantizes a Conv whose output channels differ
// in scale by 100x (as Silero VAD's reparameterised Convs do): per tensor,
// the small channels lose nearly all precision; DynamicPerChannel gives
// every channel its own scale, stored as [M, 1] to broadcast over
// ConvInteger's output, and the result matches a per-channel reference.
func TestDynamicConvPerChannel(t *testing.T) {
	needRuntime(t)
	r := rand.New(rand.NewPCG(3, 9))
	const cin, cout, k, l = 4, 3, 3, 16
	w := randFloats(r, cout*cin*k, 0.5)
	for i := range cin * k { // channel 0 is 100x larger
		w[i] *= 100
	}
	bias := []float32{0.5, -0.25, 0.125}
	model := newBuilder(17).input("x", graph.Float, -1, cin, l).output("y", graph.Float, -1, cout, l).
		init("w", []int64{cout, cin, k}, w).init("b", []int64{cout}, bias).
		node("Conv", "conv", []string{"x", "w", "b"}, []string{"y"},
			&onnxpb.AttributeProto{Name: "pads", Type: onnxpb.AttributeProto_INTS, Ints: []int64{1, 1}}).bytes(t)
	x := randFloats(r, 2*cin*l, 1)
	in := Batch{{Name: "x", Shape: []int64{2, cin, l}, Data: x}}
	want := run(t, model, in)[0]
	// relErr is the largest error on the small channels relative to their
	// largest value.
	relErr := func(got []float32) float64 {
		var d, m float64
		for i := range got {
			if c := (i / l) % cout; c == 0 {
				continue
			}
			d = max(d, maxAbsDiff(got[i:i+1], want[i:i+1]))
			m = max(m, maxAbs(want[i:i+1]))
		}
		return d / m
	}
	perTensor, _, err := Dynamic(context.Background(), model, Options{})
	if err != nil {
		t.Fatal(err)
	}
	q, rep, err := Dynamic(context.Background(), model, Options{DynamicPerChannel: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Quantized) != 1 || opCounts(t, q)["ConvInteger"] != 1 {
		t.Fatalf("report %v, ops %v", rep, opCounts(t, q))
	}
	m, err := graph.Decode(q, "")
	if err != nil {
		t.Fatal(err)
	}
	var scale, zp *onnxpb.TensorProto
	for _, init := range m.Graph.Initializer {
		switch graph.Elem(init.GetDataType()) {
		case graph.Float:
			if len(init.Dims) == 2 {
				scale = init
			}
		case graph.Int8:
			if len(init.Dims) == 0 {
				zp = init
			}
		}
	}
	if scale == nil || scale.Dims[0] != cout || scale.Dims[1] != 1 || zp == nil {
		t.Fatalf("want a [%d, 1] scale and a scalar zero point; initializers %v", cout, m.Graph.Initializer)
	}
	gotPT, got := run(t, perTensor, in)[0], run(t, q, in)[0]
	t.Logf("small channels: error %.4f per tensor, %.4f per channel", relErr(gotPT), relErr(got))
	if relErr(got) > 0.03 {
		t.Errorf("per-channel error %.4f on the small channels", relErr(got))
	}
	if relErr(got)*5 > relErr(gotPT) {
		t.Errorf("per channel (%.4f) is not clearly better than per tensor (%.4f)", relErr(got), relErr(gotPT))
	}
	// Reference: each channel's weights quantized with its own symmetric
	// scale, the activation as DynamicQuantizeLinear does.
	ps, wq, err := quantmath.QuantizePerChannel(w, []int64{cout, cin, k}, 0, quantmath.Int8, true, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	deq := make([]float32, len(w))
	for i := range w {
		deq[i] = float32(wq[i]) * ps[i/(cin*k)].Scale
	}
	ref := newBuilder(17).input("x", graph.Float, -1, cin, l).output("y", graph.Float, -1, cout, l).
		init("w", []int64{cout, cin, k}, deq).init("b", []int64{cout}, bias).
		node("DynamicQuantizeLinear", "dq", []string{"x"}, []string{"xq", "xs", "xz"}).
		node("DequantizeLinear", "dd", []string{"xq", "xs", "xz"}, []string{"xd"}).
		node("Conv", "conv", []string{"xd", "w", "b"}, []string{"y"},
			&onnxpb.AttributeProto{Name: "pads", Type: onnxpb.AttributeProto_INTS, Ints: []int64{1, 1}}).bytes(t)
	if d := maxAbsDiff(got, run(t, ref, in)[0]); d > 1e-4*maxAbs(want) {
		t.Fatalf("differs from the per-channel reference by %g", d)
	}
}
