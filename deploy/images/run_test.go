package images_test

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/edgefleet/edgefleet/deploy/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/edgefleet/edgefleet/deploy/images"
)

// TestRunAgentImageWithRunc pushes the agent-only index to the hub's
// embedded registry, pulls the amd64 image back, unpacks it into a runc
// bundle and runs it as uid 65532 with a read-only root filesystem: first
// `edgefleet model pull` fills the data volume from the registry, then the
// agent serves the model and a request from outside the container answers
// the sample digit correctly. The container shares the host's network
// namespace (the registry and the test's client are on loopback).
func TestRunAgentImageWithRunc(t *testing.T) {
	runc := needTool(t, "runc", "runc")
	if os.Geteuid() != 0 {
		t.Fatal("running a runc container needs root")
	}
	idx, plats, env := agentIndex(t)
	ctx := context.Background()
	host := startRegistry(t)
	pushed, err := images.Push(ctx, host+"/edgefleet/"+images.AgentName+":test", idx)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := idx.Digest()
	if pushed.DigestStr() != want.String() {
		t.Fatalf("pushed %s, built %s", pushed, want)
	}
	modelRef := host + "/models/digits-cnn:1"
	runCmd(t, hostBinary(plats), "model", "push", "--ort-lib", env.ORTLibs["amd64"], "--name", "digits-cnn",
		fixture(t, "digits/cnn.onnx"), modelRef)

	ref, err := name.ParseReference(pushed.String())
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := os.MkdirTemp("", "runc-bundle-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bundle) })
	rootfs := filepath.Join(bundle, "rootfs")
	unpack(t, img, rootfs)
	vol := filepath.Join(bundle, "data")
	if err := os.Mkdir(vol, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(vol, images.UID, images.GID); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(bundle, "state")
	runcCmd := func(args ...string) *exec.Cmd {
		return exec.Command(runc, append([]string{"--root", state}, args...)...)
	}
	var n int
	start := func(args ...string) (id string, done chan struct{}, out *testenv.Buffer) {
		t.Helper()
		n++
		id = fmt.Sprintf("edgefleet-test-%d-%d", os.Getpid(), n)
		writeRuncConfig(t, runc, bundle, cf, vol, append(append([]string{}, cf.Config.Entrypoint...), args...))
		cmd := runcCmd("run", "--bundle", bundle, id)
		out = &testenv.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done = make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			runcCmd("kill", id, "KILL").Run()
			<-done
			runcCmd("delete", "--force", id).Run()
		})
		return id, done, out
	}

	_, done, out := start("model", "pull", modelRef, "--data", images.DataDir)
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("model pull in the container did not finish:\n%s", out)
	}
	if !strings.Contains(out.String(), "cached digits-cnn version") {
		t.Fatalf("model pull in the container:\n%s", out)
	}

	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	id, done, out := start("agent", "--data", images.DataDir, "--http", fmt.Sprintf("127.0.0.1:%d", port), "--grpc", "off")
	waitReady(t, base, done, out.String)
	if got := inferDigit(t, base); got != 5 {
		t.Errorf("the containerised agent classified the sample 5 as %d", got)
	}

	var st struct {
		Pid int `json:"pid"`
	}
	raw, err := runcCmd("state", id).Output()
	if err != nil || json.Unmarshal(raw, &st) != nil || st.Pid == 0 {
		t.Fatalf("runc state: %v %s", err, raw)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "\nUid:\t65532\t65532\t65532\t65532\n") {
		t.Errorf("the agent does not run as uid 65532:\n%s", status)
	}
	mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	rootRO := false
	for _, l := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(l)
		if len(f) > 5 && f[4] == "/" {
			rootRO = strings.Contains(","+f[5]+",", ",ro,")
		}
	}
	if !rootRO {
		t.Errorf("the container's root is not mounted read-only:\n%s", mounts)
	}
	// The image's health check command, run inside the container.
	hc := strings.Join(cf.Config.Healthcheck.Test, " ")
	if h, err := runcCmd("exec", id, images.BinPath, "health", "--url", base+"/v2/health/ready").CombinedOutput(); err != nil || !strings.Contains(string(h), "healthy") {
		t.Errorf("health check (%s) in the container: %v %s", hc, err, h)
	}
	if err := runcCmd("kill", id, "TERM").Run(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the agent did not stop on SIGTERM:\n%s", out)
	}
	if !strings.Contains(out.String(), "stopped") {
		t.Errorf("no clean drain in the agent's log:\n%s", out)
	}
}

// writeRuncConfig writes bundle/config.json: runc's default spec with the
// image's environment, uid 65532, a read-only root, no capabilities, the
// data volume at images.DataDir, a tmpfs /tmp, and the host's network.
func writeRuncConfig(t *testing.T, runc, bundle string, cf *v1.ConfigFile, vol string, args []string) {
	t.Helper()
	os.Remove(filepath.Join(bundle, "config.json"))
	if out, err := exec.Command(runc, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	proc := spec["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = args
	proc["env"] = cf.Config.Env
	proc["cwd"] = cf.Config.WorkingDir
	proc["user"] = map[string]any{"uid": images.UID, "gid": images.GID}
	proc["noNewPrivileges"] = true
	proc["capabilities"] = map[string]any{"bounding": []string{}, "effective": []string{}, "permitted": []string{}, "inheritable": []string{}, "ambient": []string{}}
	spec["root"] = map[string]any{"path": "rootfs", "readonly": true}
	spec["hostname"] = "edgefleet"
	mounts := spec["mounts"].([]any)
	mounts = append(mounts,
		map[string]any{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "nodev", "mode=1777"}},
		map[string]any{"destination": images.DataDir, "type": "bind", "source": vol, "options": []string{"rbind", "rw"}},
	)
	spec["mounts"] = mounts
	linux := spec["linux"].(map[string]any)
	var ns []any
	for _, n := range linux["namespaces"].([]any) {
		if n.(map[string]any)["type"] != "network" {
			ns = append(ns, n)
		}
	}
	linux["namespaces"] = ns
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestArm64UnderQemu runs the arm64 agent-only binary of the image under
// qemu-aarch64-static with the image's own arm64 filesystem (glibc and
// libstdc++ from the arm64 .debs, onnxruntime for arm64) as QEMU_LD_PREFIX:
// --version, a model import (onnxruntime inspects the model), and the agent
// serving the digits CNN and answering the sample correctly.
func TestArm64UnderQemu(t *testing.T) {
	qemu := needTool(t, "qemu-aarch64-static", "qemu-user-static")
	idx, _, _ := agentIndex(t)
	img, err := platformImage(idx, "arm64")
	if err != nil {
		t.Fatal(err)
	}
	sysroot, err := os.MkdirTemp("", "arm64-sysroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sysroot) })
	unpack(t, img, sysroot)
	bin := filepath.Join(sysroot, images.BinPath)
	ortLib := filepath.Join(sysroot, images.ORTPath)
	qemuCmd := func(args ...string) *exec.Cmd {
		cmd := exec.Command(qemu, append([]string{bin}, args...)...)
		cmd.Env = append(os.Environ(), "QEMU_LD_PREFIX="+sysroot, "EDGEFLEET_ORT_LIB="+ortLib)
		return cmd
	}
	if out, err := exec.Command("file", "-L", bin).CombinedOutput(); err == nil && !strings.Contains(string(out), "ARM aarch64") {
		t.Fatalf("%s is not an arm64 binary: %s", bin, out)
	}
	v, err := qemuCmd("--version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), "edgefleet version") || !strings.Contains(string(v), "agent-only") {
		t.Fatalf("--version under qemu: %v\n%s", err, v)
	}
	data := t.TempDir()
	if out, err := qemuCmd("model", "import", "--data", data, "--name", "digits-cnn", fixture(t, "digits/cnn.onnx")).CombinedOutput(); err != nil {
		t.Fatalf("model import under qemu: %v\n%s", err, out)
	}
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd := qemuCmd("agent", "--data", data, "--http", fmt.Sprintf("127.0.0.1:%d", port), "--grpc", "off")
	out := &testenv.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	waitReady(t, base, done, out.String)
	if got := inferDigit(t, base); got != 5 {
		t.Errorf("the arm64 agent classified the sample 5 as %d", got)
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(maps), ortLib) {
		t.Errorf("the arm64 onnxruntime %s is not mapped in the qemu process", ortLib)
	}
}

func platformImage(idx v1.ImageIndex, arch string) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, m := range im.Manifests {
		if m.Platform != nil && m.Platform.Architecture == arch {
			return idx.Image(m.Digest)
		}
	}
	return nil, fmt.Errorf("no %s image in the index", arch)
}
