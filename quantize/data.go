package quantize

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
	"github.com/edgefleet/edgefleet/quantize/onnxpb"
)

// CSVFormat describes a CSV dataset with one sample per row, for
// calibration and evaluation of single-input models.
type CSVFormat struct {
	// Input is the model input the features feed.
	Input string
	// Shape is one sample's shape, without the batch dimension ([1, 8, 8]
	// for the digits models); the row's features fill it in order.
	Shape []int64
	// Scale multiplies every feature (1/16 for the digits' 0..16 pixels);
	// 0 means 1.
	Scale float32
	// LabelColumn is the index of the integer label column, or -1 when
	// there is none. The other columns are features.
	LabelColumn int
	// Header skips the first row.
	Header bool
	// BatchSize is the number of samples per batch; 0 means 32.
	BatchSize int
}

// ErrDataset wraps problems with a calibration or evaluation dataset.
var ErrDataset = errors.New("bad dataset")

// ReadCSV reads a CSV dataset as batches of float32 tensors of shape
// [n, Shape...], with the labels (nil without a label column).
func ReadCSV(r io.Reader, f CSVFormat) ([]Batch, []int, error) {
	if f.Input == "" || len(f.Shape) == 0 {
		return nil, nil, fmt.Errorf("%w: CSV format needs an input name and a sample shape", ErrDataset)
	}
	if f.Scale == 0 {
		f.Scale = 1
	}
	if f.BatchSize <= 0 {
		f.BatchSize = 32
	}
	per := int(graph.NumElements(f.Shape))
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	var (
		batches []Batch
		labels  []int
		cur     []float32
		line    int
	)
	flush := func() {
		if len(cur) == 0 {
			return
		}
		n := int64(len(cur) / per)
		batches = append(batches, Batch{{Name: f.Input, Shape: append([]int64{n}, f.Shape...), Data: cur}})
		cur = nil
	}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		line++
		if err != nil {
			return nil, nil, fmt.Errorf("%w: line %d: %v", ErrDataset, line, err)
		}
		if line == 1 && f.Header {
			continue
		}
		want := per
		if f.LabelColumn >= 0 {
			want++
		}
		if len(rec) != want {
			return nil, nil, fmt.Errorf("%w: line %d has %d columns, want %d (%d features%s)", ErrDataset, line, len(rec), want, per,
				map[bool]string{true: " and a label", false: ""}[f.LabelColumn >= 0])
		}
		for i, field := range rec {
			field = strings.TrimSpace(field)
			if i == f.LabelColumn {
				l, err := strconv.Atoi(field)
				if err != nil {
					return nil, nil, fmt.Errorf("%w: line %d: label %q: %v", ErrDataset, line, field, err)
				}
				labels = append(labels, l)
				continue
			}
			v, err := strconv.ParseFloat(field, 32)
			if err != nil || math.IsNaN(v) {
				return nil, nil, fmt.Errorf("%w: line %d column %d: %q is not a number", ErrDataset, line, i+1, field)
			}
			cur = append(cur, float32(v)*f.Scale)
		}
		if len(cur) == per*f.BatchSize {
			flush()
		}
	}
	flush()
	if len(batches) == 0 {
		return nil, nil, fmt.Errorf("%w: no samples", ErrEmptyCalibration)
	}
	return batches, labels, nil
}

// ReadCSVFile is ReadCSV on a file.
func ReadCSVFile(path string, f CSVFormat) ([]Batch, []int, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrDataset, err)
	}
	defer fh.Close()
	b, l, err := ReadCSV(fh, f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, l, nil
}

// ReadTensorDir reads batches stored as serialized ONNX TensorProtos in the
// layout of ONNX's test data: dir holds folders (test_data_set_0, ...),
// each one batch of files input_0.pb, input_1.pb, ... A tensor without a
// name feeds inputs[k] for file input_k.pb. A dir holding .pb files
// directly is one batch.
func ReadTensorDir(dir string, inputs []string) ([]Batch, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDataset, err)
	}
	var sets []string
	hasPB := false
	for _, e := range entries {
		if e.IsDir() {
			sets = append(sets, filepath.Join(dir, e.Name()))
		} else if strings.HasSuffix(e.Name(), ".pb") {
			hasPB = true
		}
	}
	if hasPB {
		sets = []string{dir}
	}
	sort.Strings(sets)
	var out []Batch
	for _, set := range sets {
		var b Batch
		for k := 0; ; k++ {
			data, err := os.ReadFile(filepath.Join(set, fmt.Sprintf("input_%d.pb", k)))
			if errors.Is(err, os.ErrNotExist) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrDataset, err)
			}
			tp := &onnxpb.TensorProto{}
			if err := proto.Unmarshal(data, tp); err != nil {
				return nil, fmt.Errorf("%w: %s/input_%d.pb: %v", ErrDataset, set, k, err)
			}
			t, err := TensorFromProto(tp)
			if err != nil {
				return nil, fmt.Errorf("%w: %s/input_%d.pb: %w", ErrDataset, set, k, err)
			}
			if t.Name == "" {
				if k >= len(inputs) {
					return nil, fmt.Errorf("%w: %s/input_%d.pb has no name and the model has %d inputs", ErrDataset, set, k, len(inputs))
				}
				t.Name = inputs[k]
			}
			b = append(b, t)
		}
		if len(b) > 0 {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no input_N.pb files under %s", ErrEmptyCalibration, dir)
	}
	return out, nil
}

// TensorFromProto converts a FLOAT, DOUBLE, INT64, INT32, INT8, UINT8 or
// BOOL TensorProto (with its data inline) to a Tensor.
func TensorFromProto(tp *onnxpb.TensorProto) (Tensor, error) {
	t := Tensor{Name: tp.GetName(), Shape: slices.Clone(tp.GetDims())}
	n := int(graph.NumElements(tp.GetDims()))
	raw := tp.GetRawData()
	switch e := graph.Elem(tp.GetDataType()); e {
	case graph.Float, graph.Float16, graph.Double:
		v, err := graph.Floats(tp)
		if err != nil {
			return t, err
		}
		t.Data = v
	case graph.Int64:
		v, err := graph.Int64s(tp)
		if err != nil {
			return t, err
		}
		t.Data = v
	case graph.Int32:
		v, err := graph.Int64s(tp)
		if err != nil {
			return t, err
		}
		d := make([]int32, len(v))
		for i, x := range v {
			d[i] = int32(x)
		}
		t.Data = d
	case graph.Int8, graph.Uint8, graph.Bool:
		b := make([]byte, n)
		if raw != nil {
			if len(raw) != n {
				return t, fmt.Errorf("tensor %q: %d raw bytes for %d elements", tp.GetName(), len(raw), n)
			}
			copy(b, raw)
		} else {
			if len(tp.GetInt32Data()) != n {
				return t, fmt.Errorf("tensor %q: %d int32_data elements for %d", tp.GetName(), len(tp.GetInt32Data()), n)
			}
			for i, x := range tp.GetInt32Data() {
				b[i] = byte(x)
			}
		}
		switch e {
		case graph.Uint8:
			t.Data = b
		case graph.Int8:
			d := make([]int8, n)
			for i, x := range b {
				d[i] = int8(x)
			}
			t.Data = d
		default:
			d := make([]bool, n)
			for i, x := range b {
				d[i] = x != 0
			}
			t.Data = d
		}
	default:
		return t, fmt.Errorf("tensor %q: element type %v not supported", tp.GetName(), e)
	}
	return t, nil
}

// Classification returns an Evaluator computing the top-1 accuracy (in
// [0, 1]) of a model's output (logits or probabilities, [n, classes]) on
// batches with the given labels, in order.
func Classification(batches []Batch, labels []int, output string) Evaluator {
	return func(ctx context.Context, model []byte) (float64, error) {
		m, err := graph.Decode(model, "")
		if err != nil {
			return 0, err
		}
		s, err := newSession(model, modelInputs(m), []string{output})
		if err != nil {
			return 0, err
		}
		defer s.Close()
		correct, seen := 0, 0
		for _, b := range batches {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			out, err := s.Run(b)
			if err != nil {
				return 0, err
			}
			shape, scores := out[0].Shape, out[0].F32
			if len(shape) != 2 || scores == nil {
				return 0, fmt.Errorf("%w: output %q has shape %v, want [n, classes] float32", ErrDataset, output, shape)
			}
			classes := int(shape[1])
			for i := 0; i < int(shape[0]); i++ {
				if seen >= len(labels) {
					return 0, fmt.Errorf("%w: more samples than %d labels", ErrDataset, len(labels))
				}
				row := scores[i*classes : (i+1)*classes]
				best := 0
				for c, v := range row {
					if v > row[best] {
						best = c
					}
				}
				if best == labels[seen] {
					correct++
				}
				seen++
			}
		}
		if seen == 0 {
			return 0, fmt.Errorf("%w: no samples", ErrDataset)
		}
		if seen != len(labels) {
			return 0, fmt.Errorf("%w: %d samples but %d labels", ErrDataset, seen, len(labels))
		}
		return float64(correct) / float64(seen), nil
	}
}
