package bench

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/edgefleet/edgefleet/agent/models"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/hil-tests/loadgen"
	"github.com/edgefleet/edgefleet/hil-tests/v2client"
)

// Protocols accepted by LoadOptions.Protocol.
const (
	ProtocolRESTJSON   = "rest-json"
	ProtocolRESTBinary = "rest-binary"
	ProtocolGRPC       = "grpc"
)

// LoadOptions configure Load.
type LoadOptions struct {
	URL      string // REST base URL, e.g. http://127.0.0.1:8080
	Unix     string // REST over this unix socket instead of URL
	GRPC     string // gRPC address
	Model    string // model name on the server
	Version  string // "" = the server's default version
	Protocol string // rest-json, rest-binary or grpc
	// ModelFile is the ONNX file, read to generate matching inputs.
	ModelFile   string
	Shapes      []string
	Concurrency int
	Duration    time.Duration
	// ServerPID, when set, is the server process whose CPU time per request is reported.
	ServerPID int
}

// Load drives any Open Inference Protocol server with one protocol.
func Load(ctx context.Context, o LoadOptions) (loadgen.Result, error) {
	b, err := os.ReadFile(o.ModelFile)
	if err != nil {
		return loadgen.Result{}, fmt.Errorf("model file (used to build inputs): %w", err)
	}
	if _, err := runtime.Init(""); err != nil {
		return loadgen.Result{}, err
	}
	ins, err := RandomInputs(b, o.Shapes)
	if err != nil {
		return loadgen.Result{}, err
	}
	req := &models.InferRequest{Inputs: ins}
	var target loadgen.Target
	switch o.Protocol {
	case ProtocolRESTJSON, ProtocolRESTBinary:
		c := v2client.NewREST(o.URL, nil)
		if o.Unix != "" {
			c = v2client.NewUnixREST(o.Unix)
		}
		target, err = loadgen.RESTTarget(c, o.Model, o.Version, req, o.Protocol == ProtocolRESTBinary)
	case ProtocolGRPC:
		var g *v2client.GRPC
		if g, err = v2client.DialGRPC(o.GRPC); err == nil {
			defer g.Close()
			target, err = loadgen.GRPCTarget(g, o.Model, o.Version, req, true)
		}
	default:
		err = fmt.Errorf("protocol %q: want rest-json, rest-binary or grpc", o.Protocol)
	}
	if err != nil {
		return loadgen.Result{}, err
	}
	opts := loadgen.Options{Concurrency: o.Concurrency, Duration: o.Duration, Warmup: 20}
	if pid := o.ServerPID; pid > 0 {
		opts.ServerCPU = func() time.Duration { return loadgen.ProcessCPU(pid) }
	}
	r := loadgen.Run(ctx, o.Protocol, target, opts)
	if r.FirstError != nil {
		return r, fmt.Errorf("%d errors, first: %w", r.Errors, r.FirstError)
	}
	return r, nil
}
