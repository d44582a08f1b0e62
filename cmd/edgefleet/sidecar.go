//go:build !agentonly

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/edgefleet/edgefleet/sidecar"
)

func newSidecarCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sidecar",
		Short: "Kubernetes: inject the agent into labelled pods as a native sidecar",
		Long: `The injector is a mutating admission webhook: pods labelled
edgefleet.io/inject: "true" get the agent as a native sidecar (an init
container with restartPolicy Always whose startup probe waits for the models
the pod's edgefleet.io/ annotations name). deploy/helm/edgefleet installs it;
see README.md, "Kubernetes sidecar".`,
	}
	cmd.AddCommand(newSidecarInjectorCmd(g), newSidecarCertCmd())
	return cmd
}

func newSidecarInjectorCmd(g *globalFlags) *cobra.Command {
	var (
		listen, metricsAddr   string
		certFile, keyFile     string
		caCert, caKey         string
		service, namespace    string
		certValidity          time.Duration
		pullPolicy            string
		cpuReq, memReq        string
		cpuLim, memLim        string
		d                     = sidecar.DefaultDefaults()
		httpPort, grpcPort    uint16
		healthPort            uint16
		startupTimeoutSeconds int32
	)
	cmd := &cobra.Command{
		Use:   "injector",
		Short: "Run the admission webhook that injects the agent",
		Example: `  edgefleet sidecar injector --tls-cert tls.crt --tls-key tls.key --agent-image ghcr.io/acme/edgefleet-agent:1.0
  edgefleet sidecar injector --tls-ca-cert ca.crt --tls-ca-key ca.key --service edgefleet-injector --namespace edgefleet`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := g.logger().With("component", "injector")
			d.PullPolicy = corev1.PullPolicy(pullPolicy)
			switch d.PullPolicy {
			case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
			default:
				return fmt.Errorf("--pull-policy %q: want Always, IfNotPresent or Never", pullPolicy)
			}
			d.HTTPPort, d.GRPCPort, d.HealthPort = int32(httpPort), int32(grpcPort), int32(healthPort)
			d.StartupTimeoutSeconds = startupTimeoutSeconds
			for _, q := range []struct {
				v    string
				list *corev1.ResourceList
				res  corev1.ResourceName
				flag string
			}{{cpuReq, &d.Resources.Requests, corev1.ResourceCPU, "cpu-request"},
				{memReq, &d.Resources.Requests, corev1.ResourceMemory, "memory-request"},
				{cpuLim, &d.Resources.Limits, corev1.ResourceCPU, "cpu-limit"},
				{memLim, &d.Resources.Limits, corev1.ResourceMemory, "memory-limit"}} {
				if q.v == "" {
					delete(*q.list, q.res)
					continue
				}
				v, err := resource.ParseQuantity(q.v)
				if err != nil {
					return fmt.Errorf("--%s: %w", q.flag, err)
				}
				if *q.list == nil {
					*q.list = corev1.ResourceList{}
				}
				(*q.list)[q.res] = v
			}
			// The defaults must make a valid agent on their own.
			if _, err := sidecar.ParseAnnotations(map[string]string{sidecar.AnnotationModels: "m=r.example/m:1"}, d); err != nil {
				return fmt.Errorf("injector defaults: %w", err)
			}
			var certs *sidecar.CertSource
			var err error
			switch {
			case certFile != "" && keyFile != "":
				certs, err = sidecar.FileCerts(certFile, keyFile, log)
			case caCert != "" && caKey != "":
				if service == "" || namespace == "" {
					return errors.New("--tls-ca-cert needs --service and --namespace (the certificate's names)")
				}
				certs, err = sidecar.IssuedCerts(caCert, caKey, sidecar.DNSNames(service, namespace), certValidity, log)
			default:
				return errors.New("give --tls-cert and --tls-key, or --tls-ca-cert and --tls-ca-key")
			}
			if err != nil {
				return err
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			expiry := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edgefleet_injector_cert_expiry_timestamp_seconds",
				Help: "When the serving certificate in use expires (Unix time)."},
				func() float64 { return float64(certs.NotAfter().Unix()) })
			reg.MustRegister(expiry)
			inj := sidecar.NewInjector(d, reg, log)
			srv := sidecar.NewServer(inj, certs)
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			errc := make(chan error, 2)
			go func() { errc <- srv.ServeTLS(ln, "", "") }()
			log.Info("injector serving", "addr", ln.Addr().String(), "path", sidecar.MutatePath, "image", d.Image)
			var msrv *http.Server
			if metricsAddr != "" {
				mux := http.NewServeMux()
				mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
				mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
				msrv = &http.Server{Addr: metricsAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
				go func() { errc <- msrv.ListenAndServe() }()
				log.Info("metrics serving", "addr", metricsAddr)
			}
			select {
			case <-cmd.Context().Done():
			case err = <-errc:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			if msrv != nil {
				_ = msrv.Shutdown(ctx)
			}
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", ":8443", "HTTPS address of the webhook")
	f.StringVar(&metricsAddr, "metrics", ":9090", `plain HTTP address of /metrics and /healthz ("" to disable)`)
	f.StringVar(&certFile, "tls-cert", "", "serving certificate file (reloaded when it changes; e.g. from cert-manager)")
	f.StringVar(&keyFile, "tls-key", "", "serving key file")
	f.StringVar(&caCert, "tls-ca-cert", "", "CA certificate to issue the injector's own serving certificate from (instead of --tls-cert)")
	f.StringVar(&caKey, "tls-ca-key", "", "CA key")
	f.StringVar(&service, "service", "", "the injector's Service name (the certificate's SAN is <service>.<namespace>.svc)")
	f.StringVar(&namespace, "namespace", os.Getenv("POD_NAMESPACE"), "the injector's namespace (default $POD_NAMESPACE)")
	f.DurationVar(&certValidity, "cert-validity", 90*24*time.Hour, "validity of an issued serving certificate (renewed with a third left)")
	f.StringVar(&d.Image, "agent-image", d.Image, "default agent image (annotation edgefleet.io/image overrides)")
	f.StringVar(&pullPolicy, "pull-policy", string(d.PullPolicy), "agent image pull policy")
	f.Uint16Var(&httpPort, "http-port", uint16(d.HTTPPort), "default agent REST port on 127.0.0.1")
	f.Uint16Var(&grpcPort, "grpc-port", uint16(d.GRPCPort), "default agent gRPC port on 127.0.0.1")
	f.Uint16Var(&healthPort, "health-port", uint16(d.HealthPort), "agent health/metrics port on the pod IP (probes)")
	f.StringVar(&d.TrustKeysSecret, "trust-keys-secret", "", "default Secret of trusted public keys (annotation edgefleet.io/trust-keys-secret overrides)")
	f.StringVar(&cpuReq, "cpu-request", "50m", "default agent CPU request")
	f.StringVar(&memReq, "memory-request", "64Mi", "default agent memory request")
	f.StringVar(&cpuLim, "cpu-limit", "", "default agent CPU limit (none by default)")
	f.StringVar(&memLim, "memory-limit", "", "default agent memory limit (none by default)")
	f.Int32Var(&startupTimeoutSeconds, "startup-timeout", d.StartupTimeoutSeconds, "seconds the startup probe waits for the models before the agent is restarted")
	return cmd
}

func newSidecarCertCmd() *cobra.Command {
	var service, namespace, out string
	var validity time.Duration
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Write a CA and a serving certificate for the injector (ca.crt, ca.key, tls.crt, tls.key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if service == "" || namespace == "" {
				return errors.New("--service and --namespace are required")
			}
			caCert, caKey, err := sidecar.NewCA("edgefleet-injector-ca", validity)
			if err != nil {
				return err
			}
			crt, key, err := sidecar.IssueServing(caCert, caKey, sidecar.DNSNames(service, namespace), validity)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			for name, b := range map[string][]byte{"ca.crt": caCert, "ca.key": caKey, "tls.crt": crt, "tls.key": key} {
				if err := os.WriteFile(filepath.Join(out, name), b, 0o600); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s/{ca.crt,ca.key,tls.crt,tls.key} for %s\n", out, sidecar.DNSNames(service, namespace)[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&service, "service", "edgefleet-injector", "the injector's Service name")
	cmd.Flags().StringVar(&namespace, "namespace", "", "the injector's namespace")
	cmd.Flags().StringVar(&out, "out", ".", "folder to write into")
	cmd.Flags().DurationVar(&validity, "validity", 10*365*24*time.Hour, "validity")
	return cmd
}
