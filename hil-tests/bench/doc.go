// Package bench is the serving benchmark behind `edgefleet bench serving` and
// `edgefleet bench load`: it starts the agent as a subprocess (and, when
// asked, the Node.js peer server of hil-tests/nodepeer and a baseline agent
// binary), drives each with the same closed-loop load generator
// (hil-tests/loadgen) over REST JSON, REST binary, gRPC and the unix socket,
// and reports latency percentiles, throughput and the server's CPU time per
// inference beside in-process onnxruntime, in one Markdown table.
package bench
