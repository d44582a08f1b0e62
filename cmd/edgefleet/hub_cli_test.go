//go:build !agentonly

package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/edgefleet/edgefleet/hub"
	"github.com/edgefleet/edgefleet/hub/api"
	"github.com/edgefleet/edgefleet/ota/wire"
)

// runCmd runs a command tree with args and returns its standard output.
func runCmd(t *testing.T, ctx context.Context, cmd *cobra.Command, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err != nil {
		t.Logf("%s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), err
}

func TestHubAndDeviceCommands(t *testing.T) {
	g := &globalFlags{logLevel: "error"}
	data := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := runCmd(t, ctx, newHubCmd(g), "--data", data, "--api", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--registry", "off")
		done <- err
	}()
	// The hub writes api.url when its listeners are up.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(data, api.APIURLFile)); err == nil {
			base, cfg, err := api.AdminCredentials(data, "")
			if err == nil && api.NewClient(base, cfg).Health(ctx) == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("hub did not come up")
		}
		time.Sleep(20 * time.Millisecond)
	}

	out, err := runCmd(t, ctx, newHubCmd(g), "token", "create", "--data", data, "--ttl", "1h", "--device-id", "edge-1", "--label", "site=berlin")
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(out)
	if _, _, err := wire.ParseToken(tok); err != nil {
		t.Fatalf("token create printed %q: %v", out, err)
	}
	if _, err := runCmd(t, ctx, newHubCmd(g), "token", "create", "--data", data, "--label", "nokey"); err == nil {
		t.Fatal("malformed --label accepted")
	}

	// Enroll a device through the library the agent uses would need the
	// agent; the registry only needs an enrollment, done over the API.
	base, cfg, _ := api.AdminCredentials(data, "")
	enrollOverAPI(t, base, cfg.RootCAs, tok)

	out, err = runCmd(t, ctx, newDeviceCmd(g), "ls", "--data", data)
	if err != nil || !strings.Contains(out, "edge-1") || !strings.Contains(out, "site=berlin") || !strings.Contains(out, "offline") {
		t.Fatalf("device ls:\n%s", out)
	}
	if _, err := runCmd(t, ctx, newDeviceCmd(g), "label", "edge-1", "gpu=true", "site-", "--data", data); err != nil {
		t.Fatal(err)
	}
	out, err = runCmd(t, ctx, newDeviceCmd(g), "ls", "--data", data, "-l", "gpu=true", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var devs []api.DeviceView
	if err := json.Unmarshal([]byte(out), &devs); err != nil || len(devs) != 1 || devs[0].Labels["gpu"] != "true" || devs[0].Labels["site"] != "" {
		t.Fatalf("device ls -o json after label: %s (%v)", out, err)
	}
	out, err = runCmd(t, ctx, newDeviceCmd(g), "show", "edge-1", "--data", data)
	var det api.DeviceDetail
	if err != nil || json.Unmarshal([]byte(out), &det) != nil || det.Device.ID != "edge-1" {
		t.Fatalf("device show: %s (%v)", out, err)
	}
	if _, err := runCmd(t, ctx, newDeviceCmd(g), "show", "nope", "--data", data); !api.IsStatus(err, 404) {
		t.Fatalf("show unknown device: %v", err)
	}
	out, err = runCmd(t, ctx, newDeviceCmd(g), "revoke", "edge-1", "--data", data)
	if err != nil || !strings.Contains(out, "edge-1 revoked") {
		t.Fatalf("device revoke: %q %v", out, err)
	}
	out, _ = runCmd(t, ctx, newDeviceCmd(g), "ls", "--data", data)
	if !strings.Contains(out, "revoked") {
		t.Fatalf("device ls after revoke:\n%s", out)
	}
	if _, err := runCmd(t, ctx, newDeviceCmd(g), "ls"); err == nil {
		t.Fatal("device ls without --data succeeded")
	}

	// broker-cert works offline on the data folder.
	outDir := t.TempDir()
	if _, err := runCmd(t, ctx, newHubCmd(g), "broker-cert", "--data", data, "--host", "broker.example", "--out", outDir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"broker.crt", "broker.key", "ca.crt", "crl.pem"} {
		if _, err := os.Stat(filepath.Join(outDir, f)); err != nil {
			t.Errorf("broker-cert: %v", err)
		}
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("hub: %v", err)
	}
}

// enrollOverAPI enrolls a device with token, as an agent would.
func enrollOverAPI(t *testing.T, base string, roots *x509.CertPool, token string) wire.EnrollResponse {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	body, _ := json.Marshal(wire.EnrollRequest{Token: token,
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := hc.Post(base+wire.EnrollPath, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out wire.EnrollResponse
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&out) != nil {
		t.Fatalf("enroll: HTTP %d", resp.StatusCode)
	}
	return out
}

// TestHubFlagsOverFile: flags given on the command line win over the
// file, unset flags leave it alone, and --check-config validates both.
func TestHubFlagsOverFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hub.yaml")
	if err := os.WriteFile(file, []byte("data: /from/file\napi: 127.0.0.1:1\nexternal_registry: reg.example\nmetrics: \"off\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want func(c hub.Config) bool
	}{
		{"file only", nil, func(c hub.Config) bool {
			return c.Data == "/from/file" && c.API == "127.0.0.1:1" && c.Registry == hub.Off && c.Metrics == hub.Off &&
				c.MQTT == hub.DefaultMQTTAddr
		}},
		{"flags win", []string{"--api", "127.0.0.1:2", "--registry", "127.0.0.1:3", "--metrics", "127.0.0.1:4"}, func(c hub.Config) bool {
			return c.Data == "/from/file" && c.API == "127.0.0.1:2" && c.Registry == "127.0.0.1:3" && c.Metrics == "127.0.0.1:4"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hf hubFlags
			fs := pflag.NewFlagSet("hub", pflag.ContinueOnError)
			hf.register(fs)
			if err := fs.Parse(append([]string{"--config", file}, tt.args...)); err != nil {
				t.Fatal(err)
			}
			cfg, err := hf.config(fs)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want(cfg) {
				t.Errorf("configuration %+v", cfg)
			}
		})
	}
	// The flag behaves as the file: an external registry turns the
	// embedded one off.
	var hf hubFlags
	fs := pflag.NewFlagSet("hub", pflag.ContinueOnError)
	hf.register(fs)
	if err := fs.Parse([]string{"--data", dir, "--external-registry", "reg.example"}); err != nil {
		t.Fatal(err)
	}
	if cfg, err := hf.config(fs); err != nil || cfg.Registry != hub.Off {
		t.Errorf("--external-registry: registry %q (%v), want off", cfg.Registry, err)
	}

	out, err := runCmd(t, context.Background(), newHubCmd(&globalFlags{logLevel: "error"}), "--config", file, "--check-config")
	if err != nil || !strings.Contains(out, "configuration OK") {
		t.Fatalf("--check-config: %q, %v", out, err)
	}
	_, err = runCmd(t, context.Background(), newHubCmd(&globalFlags{logLevel: "error"}), "--config", file, "--api", "nohost", "--check-config")
	if err == nil || !strings.Contains(err.Error(), "api:") {
		t.Fatalf("--check-config with a bad --api: %v", err)
	}
}
