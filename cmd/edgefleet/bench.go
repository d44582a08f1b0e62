//go:build !agentonly

package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/hil-tests/bench"
)

func newBenchCmd(_ *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Benchmarks and a v2 load generator"}
	cmd.AddCommand(newBenchServingCmd(), newBenchLoadCmd())
	return cmd
}

func newBenchServingCmd() *cobra.Command {
	var o bench.ServingOptions
	cmd := &cobra.Command{
		Use: "serving",
		Short: "Compare in-process onnxruntime, the agent (REST JSON, REST binary, gRPC, unix socket) and a Node.js peer: " +
			"CPU per inference, latency, throughput, hot-swap p99, RSS",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Stdout = cmd.OutOrStdout()
			return bench.Serving(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Model, "model", "agent/testdata/digits/cnn.onnx", "ONNX model to serve")
	f.StringVar(&o.Name, "name", "digits-cnn", "model name")
	f.StringSliceVar(&o.Shapes, "shape", nil, "input shape for dynamic dimensions, NAME=AxBxC (repeatable)")
	f.IntSliceVar(&o.Concurrency, "concurrency", []int{1}, "concurrency levels")
	f.DurationVar(&o.Duration, "duration", 3*time.Second, "measured time per row")
	f.StringVar(&o.Out, "out", "", "also write the table to this file")
	f.StringVar(&o.NodeModules, "node-peer", "", "node_modules folder with onnxruntime-node: also measure the Node.js peer server (1 process and a 2-worker cluster)")
	f.StringVar(&o.NodeScript, "node-script", "hil-tests/nodepeer/server.js", "the Node.js peer server")
	f.StringVar(&o.SwapModel, "swap-model", "", "measure p99 while this model is loaded and unloaded in a loop")
	f.IntVar(&o.BatchMax, "batch-max", 16, "max_batch_size of the dynamic-batching rows")
	f.IntVar(&o.BatchDelayMicros, "batch-delay-us", 100, "max_queue_delay_us of the dynamic-batching rows")
	f.IntVar(&o.Cycles, "cycles", 0, "load/unload cycles of --swap-model (or --model) for the RSS growth row")
	f.StringVar(&o.BaselineExe, "baseline", "", "another edgefleet binary to measure in the same run (before/after table)")
	f.StringVar(&o.Goals, "goals", "", "goal table to evaluate: digits or ocr")
	f.IntVar(&o.Rounds, "rounds", 1, "run every row this many times, interleaved, and report medians")
	return cmd
}

func newBenchLoadCmd() *cobra.Command {
	var o bench.LoadOptions
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Load-generate against any Open Inference Protocol server (REST JSON, REST binary or gRPC)",
		Example: `  edgefleet bench load --url http://127.0.0.1:8080 --model digits-cnn --model-file cnn.onnx --protocol rest-json -c 8
  edgefleet bench load --unix /run/edgefleet/agent.sock --model digits-cnn --model-file cnn.onnx --protocol rest-binary
  edgefleet bench load --grpc 127.0.0.1:8081 --model ocr-rec --model-file rec.onnx --shape x=1x3x48x320 --protocol grpc`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := bench.Load(cmd.Context(), o)
			if r.Requests > 0 {
				fmt.Fprintln(cmd.OutOrStdout(), r)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.URL, "url", "http://127.0.0.1:8080", "REST base URL")
	f.StringVar(&o.Unix, "unix", "", "REST over this unix socket instead of --url")
	f.StringVar(&o.GRPC, "grpc", "127.0.0.1:8081", "gRPC address")
	f.StringVar(&o.Model, "model", "", "model name on the server")
	f.StringVar(&o.Version, "version", "", "model version (default: the server's default)")
	f.StringVar(&o.ModelFile, "model-file", "", "the ONNX file, to generate matching inputs")
	f.StringVar(&o.Protocol, "protocol", "grpc", "rest-json, rest-binary or grpc")
	f.StringSliceVar(&o.Shapes, "shape", nil, "input shape for dynamic dimensions, NAME=AxBxC")
	f.IntVarP(&o.Concurrency, "concurrency", "c", 1, "concurrent requests")
	f.DurationVarP(&o.Duration, "duration", "d", 5*time.Second, "measured duration")
	f.IntVar(&o.ServerPID, "server-pid", 0, "also report this server process's CPU time per request")
	return cmd
}
