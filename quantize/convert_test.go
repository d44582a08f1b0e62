package quantize

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
	"github.com/edgefleet/edgefleet/quantize/opset"
)

// runModel runs model on b and returns every graph output.
func runModel(t *testing.T, model []byte, b Batch) []output {
	t.Helper()
	m, err := graph.Decode(model, "")
	if err != nil {
		t.Fatal(err)
	}
	s, err := newSession(model, modelInputs(m), modelOutputs(m))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Run(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameOutputs fails t unless got and want hold the same values (floats to
// a relative tolerance tol).
func sameOutputs(t *testing.T, what string, got, want []output, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d outputs, want %d", what, len(got), len(want))
	}
	for i := range want {
		if !slices.Equal(got[i].Shape, want[i].Shape) {
			t.Errorf("%s: output %d has shape %v, want %v", what, i, got[i].Shape, want[i].Shape)
			continue
		}
		if want[i].F32 != nil {
			if d := maxAbsDiff(got[i].F32, want[i].F32); float64(d) > tol*float64(max(1, maxAbs(want[i].F32))) {
				t.Errorf("%s: output %d differs by %g", what, i, d)
			}
			continue
		}
		if !reflect.DeepEqual(got[i].Data, want[i].Data) {
			t.Errorf("%s: output %d: got %v, want %v", what, i, got[i].Data, want[i].Data)
		}
	}
}

// TestConvertPaddleOCR converts PaddleOCR det (opset 11), rec and cls
// (opset 9, Slice with attributes, Softmax, Squeeze, ReduceMean, Clip) to
// opset 13 and 18 and checks that onnxruntime gives the same outputs as
// for the originals on a rendered text line.
func TestConvertPaddleOCR(t *testing.T) {
	needRuntime(t)
	ctx := context.Background()
	line := renderLine(t, "edgefleet 2024")
	for _, tc := range []struct {
		file    string
		in      Tensor
		targets []int64
		// rewritten must appear in the opset-13 report.
		rewritten []string
	}{
		{"ch_PP-OCRv4_rec_infer.onnx", line, []int64{13, 18}, []string{"Slice@10", "Clip@11", "Squeeze@13", "Softmax@13"}},
		{"ch_ppocr_mobile_v2.0_cls_infer.onnx", ocrClsInput(line), []int64{13}, []string{"Slice@10", "Clip@11"}},
		{"ch_PP-OCRv4_det_infer.onnx", ocrDetInput(line), []int64{13}, nil},
	} {
		t.Run(tc.file, func(t *testing.T) {
			fp32 := realModel(t, tc.file)
			want := runModel(t, fp32, Batch{tc.in})
			for _, target := range tc.targets {
				conv, rep, err := Convert(ctx, fp32, target, Options{})
				if err != nil {
					t.Fatalf("opset %d: %v", target, err)
				}
				t.Logf("%v", rep)
				m, err := graph.Decode(conv, "")
				if err != nil {
					t.Fatal(err)
				}
				if v, _ := graph.Opset(m, graph.DefaultDomain); v != target {
					t.Errorf("converted model imports opset %d, want %d", v, target)
				}
				if target == 13 {
					for _, k := range tc.rewritten {
						if rep.Rewritten[k] == 0 {
							t.Errorf("report %v lacks %s", rep.Rewritten, k)
						}
					}
				}
				sameOutputs(t, rep.String(), runModel(t, conv, Batch{tc.in}), want, 1e-5)
			}
		})
	}
}

// ocrClsInput is line resized (nearest) to the [1, 3, 48, 192] input of
// PaddleOCR's direction classifier.
func ocrClsInput(line Tensor) Tensor {
	return resizeNCHW(line, 48, 192)
}

// ocrDetInput pads line into a white [1, 3, 64, 256] canvas for the
// detector (its sides must be multiples of 32).
func ocrDetInput(line Tensor) Tensor {
	return resizeNCHW(line, 64, 256)
}

// resizeNCHW scales a [1, 3, h, w] tensor to [1, 3, H, W] by nearest
// neighbour.
func resizeNCHW(x Tensor, H, W int) Tensor {
	h, w := int(x.Shape[2]), int(x.Shape[3])
	d := x.Data.([]float32)
	out := make([]float32, 3*H*W)
	for c := range 3 {
		for y := range H {
			for i := range W {
				out[c*H*W+y*W+i] = d[c*h*w+(y*h/H)*w+i*w/W]
			}
		}
	}
	return Tensor{Name: x.Name, Shape: []int64{1, 3, int64(H), int64(W)}, Data: out}
}

// oldForm describes how an ONNX backend test case (written for a newer
// opset) is expressed at an older opset: the inputs that become attributes.
type oldForm struct {
	opset int64
	// attrs maps an input index to the attribute it becomes; kind is
	// "ints", "int" or "float".
	attrs map[int][2]string
	// inits lists the inputs that become initializers (Resize's scales, a
	// constant in real models).
	inits []int
	// set adds integer attributes.
	set map[string]int64
	// reference: the old form computes what the case expects (false where
	// the operator's meaning changed: Softmax's axis, Resize's coordinates).
	reference bool
}

// TestConvertONNXBackend runs ONNX's backend test cases for each operator
// the converter rewrites: the case at its old opset through onnxruntime
// (checked against ONNX's expected outputs where the meaning is the same),
// then converted, through onnxruntime again, with the same outputs.
func TestConvertONNXBackend(t *testing.T) {
	root := onnxTestData(t)
	needRuntime(t)
	native := oldForm{reference: true}
	ints := func(names ...string) map[int][2]string {
		m := map[int][2]string{}
		for i, n := range names {
			switch n {
			case "-": // all ones (Slice's steps): dropped
				m[i+1] = [2]string{"", "drop"}
			default:
				m[i+1] = [2]string{n, "ints"}
			}
		}
		return m
	}
	slice := oldForm{opset: 9, attrs: ints("starts", "ends", "axes", "-"), reference: true}
	clip := oldForm{opset: 10, attrs: map[int][2]string{1: {"min", "float"}, 2: {"max", "float"}}, reference: true}
	pad := oldForm{opset: 10, attrs: map[int][2]string{1: {"pads", "ints"}, 2: {"value", "float"}}, reference: true}
	axes12 := oldForm{opset: 12, attrs: ints("axes"), reference: true}
	resize := oldForm{opset: 10, inits: []int{1}}
	softmax := oldForm{opset: 12}
	for _, tc := range []struct {
		name   string
		old    oldForm
		target int64
	}{
		{"test_slice", slice, 13},
		{"test_slice_default_axes", slice, 13},
		{"test_slice_neg", slice, 13},
		{"test_slice_end_out_of_bounds", slice, 13},
		{"test_slice_start_out_of_bounds", slice, 13},
		{"test_upsample_nearest", oldForm{inits: []int{1}, reference: true}, 13},
		{"test_resize_upsample_scales_nearest", resize, 13},
		{"test_resize_downsample_scales_nearest", resize, 13},
		{"test_resize_upsample_scales_linear", resize, 13},
		{"test_resize_downsample_scales_linear", resize, 13},
		{"test_constant_pad", pad, 13},
		{"test_clip", clip, 13},
		{"test_clip_default_min", clip, 13},
		{"test_clip_default_max", clip, 13},
		{"test_clip_inbounds", clip, 13},
		{"test_clip_splitbounds", clip, 13},
		{"test_split_equal_parts_1d", oldForm{opset: 12, reference: true}, 13},
		{"test_split_variable_parts_2d", oldForm{opset: 12, attrs: ints("split"), reference: true}, 13},
		{"test_split_equal_parts_2d", oldForm{opset: 12, reference: true}, 18},
		{"test_squeeze", axes12, 13},
		{"test_squeeze_negative_axes", axes12, 13},
		{"test_unsqueeze_axis_1", axes12, 13},
		{"test_unsqueeze_two_axes", axes12, 13},
		{"test_unsqueeze_unsorted_axes", axes12, 13},
		{"test_reduce_sum_keepdims_example", axes12, 13},
		{"test_reduce_sum_do_not_keepdims_random", axes12, 13},
		{"test_reduce_mean_keepdims_example", native, 18},
		{"test_reduce_mean_negative_axes_keepdims_random", native, 18},
		{"test_reduce_max_do_not_keepdims_example", native, 18},
		{"test_reduce_l2_keep_dims_random", native, 18},
		{"test_dropout_default_old", native, 13},
		{"test_dropout_random_old", native, 13},
		{"test_batchnorm_example", oldForm{opset: 8, set: map[string]int64{"spatial": 1}, reference: true}, 13},
		{"test_batchnorm_epsilon", oldForm{opset: 7, set: map[string]int64{"spatial": 1}, reference: true}, 13},
		{"test_softmax_axis_0", softmax, 13},
		{"test_softmax_axis_1", softmax, 13},
		{"test_softmax_axis_2", softmax, 13},
		{"test_softmax_example", softmax, 13},
		{"test_logsoftmax_axis_0", softmax, 13},
		{"test_hardmax_axis_1", softmax, 13},
		{"test_top_k", oldForm{opset: 9, attrs: map[int][2]string{1: {"k", "int"}}, reference: true}, 13},
		{"test_scatter_with_axis", native, 13},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := loadCase(t, filepath.Join(root, tc.name))
			model, inputs := tc.old.apply(t, c)
			before := runModel(t, model, inputs)
			if tc.old.reference {
				var want []output
				for _, o := range c.outputs {
					d := goData(t, o)
					f, _ := d.([]float32)
					want = append(want, output{Shape: o.Dims, F32: f, Data: d})
				}
				sameOutputs(t, "old opset against ONNX's expected outputs", before, want, 1e-5)
			}
			conv, rep, err := Convert(context.Background(), model, tc.target, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Rewritten) == 0 {
				t.Errorf("nothing rewritten: %v", rep)
			}
			sameOutputs(t, rep.String(), runModel(t, conv, inputs), before, 1e-6)
		})
	}
}

// apply rewrites a backend case into its old-opset form: listed inputs
// become attributes (their test data the values) and the opset import is
// set; it returns the model and the remaining inputs.
func (f oldForm) apply(t *testing.T, c testCase) ([]byte, Batch) {
	t.Helper()
	m, err := graph.Decode(c.model, "")
	if err != nil {
		t.Fatal(err)
	}
	g := m.Graph
	if len(g.Node) != 1 {
		t.Fatalf("case has %d nodes, want 1", len(g.Node))
	}
	n := g.Node[0]
	names := modelInputs(m)
	keep := map[string]bool{}   // graph inputs kept
	onNode := map[string]bool{} // initializers the node still reads
	var b Batch
	for i, in := range names {
		at := slices.Index(n.Input, in)
		if n.GetOpType() == "Resize" || n.GetOpType() == "Upsample" {
			at = slices.Index(slices.DeleteFunc(slices.Clone(n.Input), func(s string) bool { return s == "" }), in)
		}
		if slices.Contains(f.inits, at) {
			init := proto.Clone(c.inputs[i]).(*onnxpb.TensorProto)
			init.Name = in
			g.Initializer = append(g.Initializer, init)
			onNode[in] = true
			continue
		}
		spec, toAttr := f.attrs[at]
		if !toAttr {
			keep[in] = true
			b = append(b, Tensor{Name: in, Shape: c.inputs[i].Dims, Data: goData(t, c.inputs[i])})
			continue
		}
		a := &onnxpb.AttributeProto{Name: spec[0]}
		switch spec[1] {
		case "ints":
			v, err := graph.Int64s(c.inputs[i])
			if err != nil {
				t.Fatal(err)
			}
			a.Type, a.Ints = onnxpb.AttributeProto_INTS, v
		case "int":
			v, err := graph.Int64s(c.inputs[i])
			if err != nil {
				t.Fatal(err)
			}
			a.Type, a.I = onnxpb.AttributeProto_INT, v[0]
		case "float":
			v, err := graph.Floats(c.inputs[i])
			if err != nil {
				t.Fatal(err)
			}
			a.Type, a.F = onnxpb.AttributeProto_FLOAT, v[0]
		}
		if spec[1] != "drop" {
			n.Attribute = append(n.Attribute, a)
		}
	}
	// Inputs that became attributes leave the node; the rest keep their
	// positions (Resize-10 reads X and scales).
	var ins []string
	for _, in := range n.Input {
		if in == "" || keep[in] || onNode[in] {
			ins = append(ins, in)
		}
	}
	if n.GetOpType() == "Resize" {
		ins = slices.DeleteFunc(slices.Clone(n.Input), func(s string) bool { return s == "" })
		if len(ins) != 2 {
			t.Fatalf("Resize case reads %v; want X and scales", n.Input)
		}
		n.Attribute = slices.DeleteFunc(n.Attribute, func(a *onnxpb.AttributeProto) bool { return a.GetName() != "mode" })
	}
	for len(ins) > 0 && ins[len(ins)-1] == "" {
		ins = ins[:len(ins)-1]
	}
	n.Input = ins
	g.Input = slices.DeleteFunc(g.Input, func(vi *onnxpb.ValueInfoProto) bool { return !keep[vi.GetName()] })

	for k, v := range f.set {
		n.Attribute = append(n.Attribute, graph.IntAttr(k, v))
	}
	if f.opset > 0 {
		for _, o := range m.OpsetImport {
			if o.GetDomain() == "" || o.GetDomain() == "ai.onnx" {
				o.Version = f.opset
			}
		}
	}
	out, err := graph.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return out, b
}

// TestConvertRefuses checks the named errors for what cannot be converted.
func TestConvertRefuses(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		m    *builder
		to   int64
		want string
	}{
		{"spatial BatchNormalization", newBuilder(8).input("x", graph.Float, 1, 2, 3, 3).output("y", graph.Float, 1, 2, 3, 3).
			init("s", []int64{2}, []float32{1, 1}).init("b", []int64{2}, []float32{0, 0}).
			node("BatchNormalization", "bn", []string{"x", "s", "b", "b", "s"}, []string{"y"}, graph.IntAttr("spatial", 0)), 13, `node "bn": BatchNormalization changed in opset 9`},
		{"Resize-10 nearest with computed scales", newBuilder(10).input("x", graph.Float, 1, 1, 2, 2).input("s", graph.Float, 4).output("y", graph.Float, -1, -1, -1, -1).
			node("Resize", "rs", []string{"x", "s"}, []string{"y"}), 13, `node "rs": Resize changed in opset 11`},
		{"target too new", newBuilder(9).input("x", graph.Float, 1).output("y", graph.Float, 1).node("Relu", "r", []string{"x"}, []string{"y"}), opset.MaxTarget + 1, "newest"},
		{"source too old", newBuilder(6).input("x", graph.Float, 1).output("y", graph.Float, 1).node("Relu", "r", []string{"x"}, []string{"y"}), 13, "starts at opset 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Convert(ctx, tc.m.bytes(t), tc.to, Options{})
			if !errors.Is(err, ErrUnsupported) || !errors.Is(err, opset.ErrUnsupported) {
				t.Fatalf("err = %v, want ErrUnsupported", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}
