package quantize

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/quantize/internal/graph"
)

func TestReadCSV(t *testing.T) {
	csv := "label,a,b,c,d\n1,0,4,8,16\n0,16,16,0,0\n2,1,2,3,4\n"
	f := CSVFormat{Input: "x", Shape: []int64{1, 2, 2}, Scale: 0.25, LabelColumn: 0, Header: true, BatchSize: 2}
	batches, labels, err := ReadCSV(strings.NewReader(csv), f)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(labels, []int{1, 0, 2}) {
		t.Fatalf("labels = %v", labels)
	}
	if len(batches) != 2 {
		t.Fatalf("%d batches, want 2 (2 + 1 samples)", len(batches))
	}
	b0, b1 := batches[0][0], batches[1][0]
	if b0.Name != "x" || !reflect.DeepEqual(b0.Shape, []int64{2, 1, 2, 2}) || !reflect.DeepEqual(b1.Shape, []int64{1, 1, 2, 2}) {
		t.Fatalf("shapes %v %v", b0.Shape, b1.Shape)
	}
	if want := []float32{0, 1, 2, 4, 4, 4, 0, 0}; !reflect.DeepEqual(b0.Data, want) {
		t.Fatalf("batch 0 = %v, want %v", b0.Data, want)
	}

	bad := []struct {
		name, csv string
		f         CSVFormat
		want      error
	}{
		{"too few columns", "1,2,3\n", CSVFormat{Input: "x", Shape: []int64{4}, LabelColumn: -1}, ErrDataset},
		{"not a number", "1,2,x,4\n", CSVFormat{Input: "x", Shape: []int64{4}, LabelColumn: -1}, ErrDataset},
		{"bad label", "a,1,2,3,4\n", CSVFormat{Input: "x", Shape: []int64{4}, LabelColumn: 0}, ErrDataset},
		{"NaN feature", "NaN,1,2,3\n", CSVFormat{Input: "x", Shape: []int64{4}, LabelColumn: -1}, ErrDataset},
		{"header only", "a,b\n", CSVFormat{Input: "x", Shape: []int64{2}, LabelColumn: -1, Header: true}, ErrEmptyCalibration},
		{"no input name", "1\n", CSVFormat{Shape: []int64{1}, LabelColumn: -1}, ErrDataset},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := ReadCSV(strings.NewReader(tc.csv), tc.f); !errors.Is(err, tc.want) {
				t.Fatalf("error = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReadTensorDir(t *testing.T) {
	dir := t.TempDir()
	write := func(path string, msg proto.Message) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, v := range []float32{1, 2} {
		set := filepath.Join(dir, "test_data_set_"+string(rune('0'+i)))
		write(filepath.Join(set, "input_0.pb"), graph.FloatTensor("", []int64{1, 2}, []float32{v, -v}))
		write(filepath.Join(set, "input_1.pb"), graph.Int64Tensor("sr", nil, []int64{16000}))
	}
	batches, err := ReadTensorDir(dir, []string{"audio", "sr"})
	if err != nil {
		t.Fatal(err)
	}
	if len(batches) != 2 || len(batches[1]) != 2 {
		t.Fatalf("batches = %+v", batches)
	}
	if b := batches[1]; b[0].Name != "audio" || !reflect.DeepEqual(b[0].Data, []float32{2, -2}) || b[1].Name != "sr" || !reflect.DeepEqual(b[1].Data, []int64{16000}) {
		t.Fatalf("batch 1 = %+v", b)
	}
	if _, err := ReadTensorDir(t.TempDir(), nil); !errors.Is(err, ErrEmptyCalibration) {
		t.Fatalf("empty dir: %v", err)
	}
	garbage := t.TempDir()
	if err := os.WriteFile(filepath.Join(garbage, "input_0.pb"), []byte{0xff, 0xff, 0xff}, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadTensorDir(garbage, []string{"x"}); !errors.Is(err, ErrDataset) {
		t.Fatalf("garbage tensor: %v", err)
	}
	// The ONNX backend test data reads as calibration data too.
	if root := os.Getenv("EDGEFLEET_ONNX_TESTDATA"); root != "" || fileExists("/usr/share/libonnx-testdata/data/node") {
		root = onnxTestData(t)
		b, err := ReadTensorDir(filepath.Join(root, "test_quantizelinear"), []string{"x", "y_scale", "y_zero_point"})
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != 1 || len(b[0]) != 3 {
			t.Fatalf("test_quantizelinear: %+v", b)
		}
		if _, ok := b[0][2].Data.([]uint8); !ok {
			t.Fatalf("zero point read as %T, want []uint8", b[0][2].Data)
		}
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
