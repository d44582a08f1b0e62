//go:build !agentonly

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/deploy/testenv"
	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/api"
	"github.com/edgefleet/edgefleet/hub/hubtest"
	"github.com/edgefleet/edgefleet/hub/rollout"
	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/artifact"
)

// TestRolloutAndSimulateCommands runs a hub, five simulated agents started
// with `agent simulate`, and drives rollouts with the rollout commands.
func TestRolloutAndSimulateCommands(t *testing.T) {
	g := &globalFlags{logLevel: "error"}
	data := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := hubtest.Start(t, hub.Options{DataDir: data, RegistryAddr: "127.0.0.1:0", RolloutTick: 20 * time.Millisecond})
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan error, 1)
	go func() {
		_, err := runCmd(t, simCtx, newAgentSimulateCmd(g), "--hub-data", data, "--count", "5", "--id-prefix", "cli-",
			"--labels", "site=lab", "--heartbeat", "1s", "--report-interval", "100ms")
		simDone <- err
	}()
	defer func() {
		stopSim()
		if err := <-simDone; err != nil {
			t.Errorf("agent simulate: %v", err)
		}
		h.Stop()
	}()
	base, cfg, err := api.AdminCredentials(data, "")
	if err != nil {
		t.Fatal(err)
	}
	c := api.NewClient(base, cfg)
	testenv.Eventually(t, "5 simulated devices online", 30*time.Second, func() bool {
		devs, err := c.Devices(ctx, "site=lab")
		online := 0
		for _, d := range devs {
			if d.Online {
				online++
			}
		}
		return err == nil && online == 5
	})

	push := func(v string) string {
		spec := []artifact.TensorSpec{{Name: "x", Datatype: "FP32", Shape: []int64{-1, 4}}}
		ref := h.RegistryAddr() + "/models/cli-model:" + v
		_, err := ota.Push(ctx, ref, ota.Artifact{Model: ota.BytesFile("m.onnx", []byte("v"+v)), Config: artifact.Config{
			SchemaVersion: artifact.ConfigSchemaVersion, Name: "cli-model", Version: v, Inputs: spec, Outputs: spec, Precision: artifact.PrecisionFP32}})
		if err != nil {
			t.Fatal(err)
		}
		return ref
	}
	create := func(ref string) rollout.Status {
		out, err := runCmd(t, ctx, newRolloutCmd(g), "create", "--data", data, "--model", "cli-model", "--ref", ref,
			"--selector", "site=lab", "--waves", "40%,100%", "--bake", "0", "--max-failures", "0%", "--wait", "-o", "json")
		if err != nil {
			t.Fatalf("rollout create: %v\n%s", err, out)
		}
		var st rollout.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("rollout create -o json printed %q: %v", out, err)
		}
		return st
	}
	st1 := create(push("1"))
	st2 := create(push("2"))
	for _, st := range []rollout.Status{st1, st2} {
		if st.State != rollout.StateCompleted || st.Counts.Updated != 5 || st.Counts.Matching != 5 || st.Waves[0].Target != 2 {
			t.Fatalf("rollout %+v: want completed on 5 devices, 2 in the first wave", st)
		}
	}

	out, err := runCmd(t, ctx, newRolloutCmd(g), "ls", "--data", data)
	if err != nil || !strings.Contains(out, st1.ID) || strings.Index(out, st2.ID) > strings.Index(out, st1.ID) {
		t.Fatalf("rollout ls: %v\n%s", err, out)
	}
	out, err = runCmd(t, ctx, newRolloutCmd(g), "status", "--data", data, st2.ID, "--devices")
	if err != nil || len(regexp.MustCompile(`(?m)^cli-\d{5}\s+\d\s+updated\s`).FindAllString(out, -1)) != 5 || !strings.Contains(out, "completed") {
		t.Fatalf("rollout status: %v\n%s", err, out)
	}
	if _, err := runCmd(t, ctx, newRolloutCmd(g), "pause", "--data", data, st2.ID); err == nil || !api.IsStatus(err, 409) {
		t.Fatalf("pausing a completed rollout: %v, want HTTP 409", err)
	}
	if _, err := runCmd(t, ctx, newRolloutCmd(g), "status", "--data", data, "ro-missing"); !api.IsStatus(err, 404) {
		t.Fatalf("status of an unknown rollout: %v, want HTTP 404", err)
	}
	if _, err := runCmd(t, ctx, newRolloutCmd(g), "create", "--data", data, "--model", "cli-model", "--ref", "x:1", "--waves", "50%"); err == nil {
		t.Fatal("waves not ending at 100% accepted")
	}

	// Roll version 2 back: every device desires version 1 again.
	if out, err = runCmd(t, ctx, newRolloutCmd(g), "rollback", "--data", data, st2.ID); err != nil || !strings.Contains(out, "halted") {
		t.Fatalf("rollout rollback: %v\n%s", err, out)
	}
	out, err = runCmd(t, ctx, newRolloutCmd(g), "status", "--data", data, st2.ID, "--wait", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st rollout.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.State != rollout.StateRolledBack || st.Counts.Reverted != 5 {
		t.Fatalf("after rollback: %+v, %v", st.Counts, err)
	}
	for _, d := range st.Devices {
		ds, err := c.Desired(ctx, d.ID)
		if err != nil || ds.Models["cli-model"].Version != "1" {
			t.Fatalf("%s desires %+v, %v", d.ID, ds.Models, err)
		}
	}

	// `create --wait` exits non-zero unless the rollout completed, in
	// every output format; it still prints the final status.
	for i, format := range []string{"json", "table"} {
		ref := push(fmt.Sprint(3 + i))
		type result struct {
			out string
			err error
		}
		done := make(chan result, 1)
		go func() {
			rc := newRolloutCmd(g)
			rc.SilenceUsage = true // as under the root command
			out, err := runCmd(t, ctx, rc, "create", "--data", data, "--model", "cli-model", "--ref", ref,
				"--selector", "site=lab", "--waves", "40%,100%", "--bake", "1h", "--wait", "-o", format)
			done <- result{out, err}
		}()
		var id string
		testenv.Eventually(t, "rollout of "+ref+" running", 30*time.Second, func() bool {
			list, err := c.Rollouts(ctx)
			for _, r := range list {
				if err == nil && r.Spec.Ref == ref && r.Counts.Updated > 0 {
					id = r.ID
				}
			}
			return id != ""
		})
		if _, err := c.RolloutAction(ctx, id, "rollback"); err != nil {
			t.Fatal(err)
		}
		res := <-done
		if res.err == nil || !strings.Contains(res.err.Error(), "rolled_back") {
			t.Fatalf("create --wait -o %s of a rollout that was rolled back: %v, want an error naming the state", format, res.err)
		}
		if format == "json" {
			var st rollout.Status
			if err := json.Unmarshal([]byte(res.out), &st); err != nil || st.State != rollout.StateRolledBack {
				t.Fatalf("create --wait -o json printed %q (%v): want the rolled_back status", res.out, err)
			}
		} else if !strings.Contains(res.out, "rolled_back") {
			t.Fatalf("create --wait printed %q: want the rolled_back status", res.out)
		}
	}
	if _, err := runCmd(t, ctx, newRolloutCmd(g), "create", "--data", data, "--model", "cli-model", "--ref", "x:1", "-o", "yaml"); err == nil {
		t.Fatal("-o yaml accepted")
	}
}

func TestAgentHubFlags(t *testing.T) {
	tok := "c2VjcmV0LXNlY3JldC1zZWNyZXQ." + strings.Repeat("ab", 16)
	tests := []struct {
		name string
		args []string
		want string // "" means valid
	}{
		{"enroll", []string{"--hub", "https://hub.example:7443", "--token", tok, "--device-id", "edge-1", "--labels", "site=berlin,gpu=true"}, ""},
		{"http hub", []string{"--hub", "http://hub.example:7443"}, "hub.url"},
		{"token without hub", []string{"--token", tok}, "hub.token without hub.url"},
		{"malformed token", []string{"--hub", "https://h:1", "--token", "nope"}, "hub.token"},
		{"bad device id", []string{"--hub", "https://h:1", "--device-id", "bad id"}, "hub.device_id"},
		{"bad label", []string{"--hub", "https://h:1", "--labels", "nokey"}, "want key=value"},
	}
	for _, tt := range tests {
		args := append([]string{"agent", "--check-config", "--data", t.TempDir()}, tt.args...)
		out, err := run(t, args...)
		switch {
		case tt.want == "" && (err != nil || !strings.Contains(out, "configuration OK")):
			t.Errorf("%s: %q, %v", tt.name, out, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want an error naming %q", tt.name, err, tt.want)
		}
	}
}
