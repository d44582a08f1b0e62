package quantize_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/edgefleet/edgefleet/quantize"
)

// Dynamic quantization needs only the model.
func ExampleDynamic() {
	fp32, err := os.ReadFile("../agent/testdata/digits/cnn.onnx")
	if err != nil {
		log.Fatal(err)
	}
	int8Model, rep, err := quantize.Dynamic(context.Background(), fp32, quantize.Options{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rep.Mode, len(int8Model) < len(fp32)/3)
	for _, n := range rep.Quantized {
		fmt.Println(n.OpType, n.Name)
	}
	// Output:
	// int8-dynamic true
	// Conv /conv1/Conv
	// Conv /conv2/Conv
	// Gemm /fc/Gemm
}

// Static quantization calibrates activations on data; AccuracyControl adds
// an evaluator and a budget. (Not run: it needs onnxruntime.)
func ExampleAccuracyControl() {
	fp32, _ := os.ReadFile("cnn.onnx")
	format := quantize.CSVFormat{Input: "input", Shape: []int64{1, 8, 8}, Scale: 1.0 / 16, LabelColumn: 0, Header: true}
	calib, _, err := quantize.ReadCSVFile("calib.csv", format)
	if err != nil {
		log.Fatal(err)
	}
	test, labels, err := quantize.ReadCSVFile("test.csv", format)
	if err != nil {
		log.Fatal(err)
	}
	res, err := quantize.AccuracyControl(context.Background(), fp32, quantize.Options{Calibration: quantize.Percentile},
		quantize.AccuracyOptions{
			Evaluate:    quantize.Classification(test, labels, "logits"),
			MaxDrop:     0.01, // one point of accuracy
			Calibration: calib,
		})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("fp32 %.4f int8 %.4f met %v, float nodes %v\n", res.Baseline, res.Metric, res.Met, res.Float)
	_ = os.WriteFile("cnn.int8.onnx", res.Model, 0o644)
}
