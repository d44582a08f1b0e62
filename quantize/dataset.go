package quantize

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// DatasetSpec says how a dataset on disk feeds a model: a CSV file, one
// sample per row, or a folder of ONNX test-data sets
// (test_data_set_N/input_K.pb). Zero fields take defaults from the model
// and the file.
type DatasetSpec struct {
	// Format is "csv", "pb" or "" / "auto" (pb for a folder, else csv).
	Format string
	// Input is the model input a CSV feeds; "" means the model's only input.
	Input string
	// Shape is one CSV sample's shape without the batch dimension; nil
	// takes it from the model's input (which must be static).
	Shape []int64
	// Scale multiplies every CSV feature; 0 means 1.
	Scale float32
	// LabelColumn is the CSV's integer label column, -1 for none.
	LabelColumn int
	// BatchSize is the number of CSV samples per batch; 0 means 32.
	BatchSize int
}

// ParseShape parses a sample shape written "1x8x8" or "1,8,8".
func ParseShape(s string) ([]int64, error) {
	var shape []int64
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == 'x' || r == ',' }) {
		v, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%w: shape %q: dimensions must be positive integers, e.g. 1x8x8", ErrInvalidOptions, s)
		}
		shape = append(shape, v)
	}
	if len(shape) == 0 {
		return nil, fmt.Errorf("%w: shape %q is empty", ErrInvalidOptions, s)
	}
	return shape, nil
}

// LoadDataset reads the dataset at path for model as batches, with the
// labels of a CSV's label column. needLabels makes a dataset without
// labels an error (evaluation needs them).
func LoadDataset(path string, model []byte, spec DatasetSpec, needLabels bool) ([]Batch, []int, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrDataset, err)
	}
	inputs, err := Inputs(model)
	if err != nil {
		return nil, nil, err
	}
	format := spec.Format
	if format == "" || format == "auto" {
		format = "csv"
		if st.IsDir() {
			format = "pb"
		}
	}
	switch format {
	case "pb":
		if needLabels {
			return nil, nil, fmt.Errorf("%w: %s: evaluation needs labels, which only a CSV dataset has", ErrDataset, path)
		}
		names := make([]string, len(inputs))
		for i, in := range inputs {
			names[i] = in.Name
		}
		b, err := ReadTensorDir(path, names)
		return b, nil, err
	case "csv":
	default:
		return nil, nil, fmt.Errorf("%w: dataset format %q (want csv, pb or auto)", ErrInvalidOptions, spec.Format)
	}
	if needLabels && spec.LabelColumn < 0 {
		return nil, nil, fmt.Errorf("%w: evaluation needs the CSV's label column (the column holding the class index)", ErrInvalidOptions)
	}
	in, err := spec.pickInput(inputs)
	if err != nil {
		return nil, nil, err
	}
	shape, err := spec.sampleShape(in)
	if err != nil {
		return nil, nil, err
	}
	header, err := CSVHasHeader(path)
	if err != nil {
		return nil, nil, err
	}
	return ReadCSVFile(path, CSVFormat{
		Input: in.Name, Shape: shape, Scale: spec.Scale, LabelColumn: spec.LabelColumn, Header: header, BatchSize: spec.BatchSize,
	})
}

func (d DatasetSpec) pickInput(inputs []Input) (Input, error) {
	if d.Input != "" {
		for _, in := range inputs {
			if in.Name == d.Input {
				return in, nil
			}
		}
		return Input{}, fmt.Errorf("%w: input %q: the model's inputs are %s", ErrInvalidOptions, d.Input, inputNames(inputs))
	}
	if len(inputs) != 1 {
		return Input{}, fmt.Errorf("%w: a CSV dataset feeds one input and the model has %d (%s): use a pb dataset folder",
			ErrInvalidOptions, len(inputs), inputNames(inputs))
	}
	return inputs[0], nil
}

// sampleShape is spec.Shape, or the model input's shape without the batch
// dimension when that is static.
func (d DatasetSpec) sampleShape(in Input) ([]int64, error) {
	if len(d.Shape) > 0 {
		return d.Shape, nil
	}
	if len(in.Shape) < 2 {
		return nil, fmt.Errorf("%w: input %q has shape %v: give the sample shape (one sample's shape without the batch dimension)", ErrInvalidOptions, in.Name, in.Shape)
	}
	for _, v := range in.Shape[1:] {
		if v < 0 {
			return nil, fmt.Errorf("%w: input %q has dynamic dimensions %v: give the sample shape", ErrInvalidOptions, in.Name, in.Shape)
		}
	}
	return in.Shape[1:], nil
}

func inputNames(inputs []Input) string {
	names := make([]string, len(inputs))
	for i, in := range inputs {
		names[i] = in.Name
	}
	return strings.Join(names, ", ")
}

// CSVHasHeader reports whether the first row of a CSV file holds a field
// that is not a number.
func CSVHasHeader(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrDataset, err)
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("%w: %s: %w", ErrDataset, path, err)
	}
	for _, field := range strings.Split(strings.TrimSpace(line), ",") {
		if _, err := strconv.ParseFloat(strings.Trim(strings.TrimSpace(field), `"`), 64); err != nil {
			return true, nil
		}
	}
	return false, nil
}
