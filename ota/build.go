package ota

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/edgefleet/edgefleet/ota/artifact"
)

// VariantSpec names one precision variant of a model version to build: its
// ONNX file, its weight precision, and the quantization record of a
// quantizer report, if any.
type VariantSpec struct {
	File         string
	Precision    artifact.Precision
	Quantization *artifact.Quantization
}

// quantizeReport is the part of a report written by `edgefleet quantize
// --report` a variant needs.
type quantizeReport struct {
	Precision    artifact.Precision     `json:"precision"`
	Quantization *artifact.Quantization `json:"quantization"`
}

// ParseVariantSpec parses FILE, FILE:PRECISION or FILE:REPORT.json (a
// report written by `edgefleet quantize --report`, which gives precision
// and quantization record); def is the precision of a bare FILE. A file
// name with a colon that exists is taken as it is.
func ParseVariantSpec(s string, def artifact.Precision) (VariantSpec, error) {
	sp := VariantSpec{File: s, Precision: def}
	if i := strings.LastIndex(s, ":"); i > 0 {
		file, spec := s[:i], s[i+1:]
		switch {
		case strings.HasSuffix(spec, ".json"):
			b, err := os.ReadFile(spec)
			if err != nil {
				return sp, fmt.Errorf("variant %q: %w", s, err)
			}
			var r quantizeReport
			if err := json.Unmarshal(b, &r); err != nil || r.Precision == "" {
				return sp, fmt.Errorf("variant %q: %s is not a report written by edgefleet quantize --report (%v)", s, spec, err)
			}
			sp = VariantSpec{File: file, Precision: r.Precision, Quantization: r.Quantization}
		case artifact.CheckPrecision(artifact.Precision(spec)) == nil:
			sp = VariantSpec{File: file, Precision: artifact.Precision(spec)}
		default:
			if _, err := os.Stat(s); err != nil {
				return sp, fmt.Errorf("variant %q: %q is neither a precision (fp32, fp16, bf16, int8, uint8, mixed) nor a .json report", s, spec)
			}
		}
	}
	if err := artifact.CheckPrecision(sp.Precision); err != nil {
		return sp, fmt.Errorf("variant %q: %w", s, err)
	}
	return sp, nil
}

// Describer returns the artifact config of a model's bytes at a precision:
// inputs, outputs and golden vector. agent/update.Describe is the one that
// runs the model with onnxruntime; ota does not load models itself.
type Describer func(model []byte, precision artifact.Precision) (*artifact.Config, error)

// Build assembles the artifact of one variant: the config describe
// returns (with the variant's quantization record), the model layer from
// the variant's file, and files as extra layers.
func Build(v VariantSpec, files []string, describe Describer) (Artifact, error) {
	model, err := os.ReadFile(v.File)
	if err != nil {
		return Artifact{}, err
	}
	cfg, err := describe(model, v.Precision)
	if err != nil {
		return Artifact{}, fmt.Errorf("%s: %w", v.File, err)
	}
	cfg.Quantization = v.Quantization
	art := Artifact{Config: *cfg}
	if art.Model, err = OpenFile(v.File); err != nil {
		return Artifact{}, err
	}
	for _, f := range files {
		of, err := OpenFile(f)
		if err != nil {
			return Artifact{}, err
		}
		art.Files = append(art.Files, of)
	}
	return art, nil
}

// BuildVariants builds one artifact per variant (see Build), in order, for
// PushVariants.
func BuildVariants(vs []VariantSpec, files []string, describe Describer) ([]Artifact, error) {
	arts := make([]Artifact, len(vs))
	for i, v := range vs {
		var err error
		if arts[i], err = Build(v, files, describe); err != nil {
			return nil, err
		}
	}
	return arts, nil
}
