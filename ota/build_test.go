package ota_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/artifact"
)

func TestParseVariantSpec(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	report := write("int8.report.json", `{"precision":"int8","quantization":{"method":"dynamic"}}`)
	notReport := write("other.json", `{"hello":1}`)
	colon := write("odd:name.onnx", "x")
	tests := []struct {
		in, wantFile string
		wantPrec     artifact.Precision
		wantQuant    bool
		wantErr      string
	}{
		{in: "m.onnx", wantFile: "m.onnx", wantPrec: "fp32"},
		{in: "m.onnx:fp16", wantFile: "m.onnx", wantPrec: "fp16"},
		{in: "m.int8.onnx:" + report, wantFile: "m.int8.onnx", wantPrec: "int8", wantQuant: true},
		{in: colon, wantFile: colon, wantPrec: "fp32"},
		{in: "m.onnx:" + notReport, wantErr: "not a report"},
		{in: "m.onnx:int3", wantErr: "neither a precision"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			sp, err := ota.ParseVariantSpec(tt.in, "fp32")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sp.File != tt.wantFile || sp.Precision != tt.wantPrec || (sp.Quantization != nil) != tt.wantQuant {
				t.Errorf("got %+v", sp)
			}
		})
	}
}

func TestBuildVariants(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{"a.onnx": "model a", "b.onnx": "model b", "labels.txt": "0\n1\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var seen []string
	describe := func(model []byte, p artifact.Precision) (*artifact.Config, error) {
		seen = append(seen, string(model)+"@"+string(p))
		return &artifact.Config{Name: "m", Version: "1", Precision: p}, nil
	}
	q := &artifact.Quantization{Method: "dynamic"}
	arts, err := ota.BuildVariants([]ota.VariantSpec{
		{File: filepath.Join(dir, "a.onnx"), Precision: "fp32"},
		{File: filepath.Join(dir, "b.onnx"), Precision: "int8", Quantization: q},
	}, []string{filepath.Join(dir, "labels.txt")}, describe)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(seen, ",") != "model a@fp32,model b@int8" {
		t.Errorf("described %v", seen)
	}
	if len(arts) != 2 || arts[1].Config.Quantization != q || arts[0].Config.Quantization != nil ||
		len(arts[0].Files) != 1 || arts[0].Model.Size != int64(len("model a")) {
		t.Errorf("artifacts %+v", arts)
	}
	boom := errors.New("boom")
	_, err = ota.Build(ota.VariantSpec{File: filepath.Join(dir, "a.onnx")}, nil,
		func([]byte, artifact.Precision) (*artifact.Config, error) { return nil, boom })
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "a.onnx") {
		t.Errorf("describe failure: %v", err)
	}
}
