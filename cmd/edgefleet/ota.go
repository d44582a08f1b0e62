package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/dustin/go-humanize"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/ota"
	"github.com/edgefleet/edgefleet/ota/artifact"
	"github.com/edgefleet/edgefleet/ota/durable"
	"github.com/edgefleet/edgefleet/ota/signature"
)

// newOTAModelCmds returns the `edgefleet model` subcommands that move models
// through OCI registries: push, pull, inspect, sign, verify, keygen.
func newOTAModelCmds(g *globalFlags) []*cobra.Command {
	return []*cobra.Command{newModelPushCmd(g), newModelPullCmd(g), newModelInspectCmd(g),
		newModelSignCmd(g), newModelVerifyCmd(g), newModelKeygenCmd()}
}

// newAgentUpdateCmds returns the `edgefleet agent` subcommands that drive a
// running agent's over-the-air updates: update, rollback, update-status.
func newAgentUpdateCmds(g *globalFlags) []*cobra.Command {
	return []*cobra.Command{newAgentUpdateCmd(g), newAgentRollbackCmd(g), newAgentUpdateStatusCmd(g)}
}

// registryFlags are the flags every registry command has.
type registryFlags struct {
	insecure bool
}

func (r *registryFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&r.insecure, "insecure", false, "allow plain HTTP to any registry (loopback and private registries may use it anyway)")
}

// options returns registry options with progress reporting to out.
func (r *registryFlags) options(g *globalFlags, out io.Writer) []ota.Option {
	log := g.logger()
	opts := []ota.Option{ota.WithLogger(log), ota.WithProgress(newProgress(out, log))}
	if r.insecure {
		opts = append(opts, ota.WithInsecure())
	}
	return opts
}

// progress shows transfers as progress bars when out is a terminal, and as
// log lines otherwise.
type progress struct {
	log *slog.Logger
	out io.Writer
	tty bool

	mu  sync.Mutex // guards bar
	bar *progressbar.ProgressBar
}

func newProgress(out io.Writer, log *slog.Logger) *progress {
	p := &progress{log: log, out: out}
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	return p
}

func (p *progress) Update(e ota.Event) {
	what := e.Title
	if what == "" {
		what = "config"
	}
	dir := "pull"
	if e.Push {
		dir = "push"
	}
	if !p.tty {
		switch e.Kind {
		case ota.EventStart:
			p.log.Info(dir+" started", "file", what, "digest", e.Digest, "from", e.Done, "size", e.Total)
		case ota.EventRetry:
			p.log.Warn(dir+" retrying", "file", what, "at", e.Done, "err", e.Err)
		case ota.EventRestart:
			p.log.Warn(dir+" restarting from 0", "file", what, "err", e.Err)
		case ota.EventSkip:
			p.log.Info(dir+" skipped (already there)", "file", what, "digest", e.Digest)
		case ota.EventDone:
			p.log.Info(dir+" done", "file", what, "bytes", e.Total)
		case ota.EventFail:
			p.log.Error(dir+" failed", "file", what, "err", e.Err)
		}
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Kind {
	case ota.EventStart, ota.EventRestart:
		if p.bar != nil {
			_ = p.bar.Exit()
		}
		p.bar = progressbar.NewOptions64(e.Total, progressbar.OptionSetWriter(p.out),
			progressbar.OptionSetDescription(fmt.Sprintf("%s %-20.20s", dir, what)), progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(), progressbar.OptionSetWidth(30), progressbar.OptionThrottle(100_000_000),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.out) }))
		_ = p.bar.Set64(e.Done)
	case ota.EventAdvance, ota.EventRetry:
		if p.bar != nil {
			_ = p.bar.Set64(e.Done)
		}
	case ota.EventDone:
		if p.bar != nil {
			_ = p.bar.Finish()
			p.bar = nil
		}
	case ota.EventSkip:
		fmt.Fprintf(p.out, "%s %s: already there\n", dir, what)
	case ota.EventFail:
		if p.bar != nil {
			_ = p.bar.Exit()
			p.bar = nil
		}
	}
}

func newModelPushCmd(g *globalFlags) *cobra.Command {
	var (
		reg                                        registryFlags
		modelName, version, goldenInput, tolerance string
		precision, minAgent, description, ortLib   string
		files, providers, labels, variants         []string
		seed                                       uint64
	)
	cmd := &cobra.Command{
		Use:   "push (FILE.onnx | --variant FILE[:PRECISION|:REPORT.json]...) REF",
		Short: "Push an ONNX model to an OCI registry as a model artifact",
		Long: `Push builds a model artifact (see ota/SPEC.md) from an ONNX file: a config with
the model's inputs and outputs and a golden test vector, computed here by running
the model with onnxruntime on the --golden-input tensors (a JSON file in the Open
Inference Protocol request format) or on generated ones; the model layer; and any
--file layers. Agents refuse to activate a version whose outputs differ from the
golden vector beyond --tolerance.

With --variant (repeatable) push several precision variants of one version:
each file becomes its own artifact, with a golden vector computed from that
file, and REF becomes a variant index listing them (ota/SPEC.md section 7).
A variant's precision is the PRECISION after the file name, or the precision
and quantization record of a report written by 'edgefleet quantize --report',
or --precision. Its execution providers are --providers or, by default, cpu
for int8/uint8/mixed and cuda,tensorrt,cpu for float models. Agents install
the variant for their providers (INT8 on CPU, FP16/FP32 on GPU); sign REF
(the index) and the signature covers every variant.`,
		Example: `  edgefleet model push agent/testdata/digits/cnn.onnx localhost:5000/models/digits-cnn:3
  edgefleet model push --golden-input sample.json --tolerance abs=1e-3,rel=1e-2 --file labels.txt model.onnx registry.example.com/m:4
  edgefleet model push --name digits-cnn --variant cnn.onnx:fp32 --variant cnn.int8.onnx:int8.report.json localhost:5000/models/digits-cnn:5`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(variants) > 0 {
				return cobra.ExactArgs(1)(cmd, args)
			}
			return cobra.ExactArgs(2)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := args[len(args)-1]
			var specs []ota.VariantSpec
			for _, v := range variants {
				sp, err := ota.ParseVariantSpec(v, artifact.Precision(precision))
				if err != nil {
					return fmt.Errorf("--%w", err)
				}
				specs = append(specs, sp)
			}
			file := ""
			if len(specs) == 0 {
				file = args[0]
			} else {
				file = specs[0].File
			}
			r, err := name.ParseReference(ref, name.StrictValidation)
			if err != nil {
				return fmt.Errorf("reference %q: %w (want HOST/REPOSITORY:TAG)", ref, err)
			}
			if modelName == "" {
				modelName = strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
			}
			if version == "" {
				tag, ok := r.(name.Tag)
				if _, err := strconv.ParseUint(r.Identifier(), 10, 64); !ok || err != nil {
					return fmt.Errorf("--version is required unless the tag is the version number (got %q)", r.Identifier())
				}
				version = tag.TagStr()
			}
			tol, err := parseTolerance(tolerance)
			if err != nil {
				return err
			}
			lbls, err := parseLabels("label", labels)
			if err != nil {
				return err
			}
			if _, err := runtime.Init(ortLib); err != nil {
				return err
			}
			o := update.DescribeOptions{Name: modelName, Version: version, Precision: artifact.Precision(precision),
				Tolerance: &tol, Seed: seed, Description: description, ExecutionProviders: providers,
				MinAgentVersion: minAgent, Labels: lbls}
			switch goldenInput {
			case "generated", "":
			case "none":
				o.NoGolden = true
			default:
				b, err := os.ReadFile(goldenInput)
				if err != nil {
					return err
				}
				if o.Inputs, err = update.ParseInputs(b); err != nil {
					return err
				}
			}
			describe := func(model []byte, prec artifact.Precision) (*artifact.Config, error) {
				o := o
				o.Precision = prec
				return update.Describe(model, o)
			}
			w := cmd.OutOrStdout()
			if len(specs) == 0 {
				art, err := ota.Build(ota.VariantSpec{File: file, Precision: artifact.Precision(precision)}, files, describe)
				if err != nil {
					return err
				}
				d, err := ota.Push(cmd.Context(), ref, art, reg.options(g, w)...)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "pushed %s version %s\n%s\n", art.Config.Name, art.Config.Version, d)
				return nil
			}
			arts, err := ota.BuildVariants(specs, files, describe)
			if err != nil {
				return err
			}
			opts := reg.options(g, w)
			d, err := ota.PushVariants(cmd.Context(), ref, arts, opts...)
			if err != nil {
				return err
			}
			ix, err := ota.InspectIndex(cmd.Context(), d.String(), opts...)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "pushed %s version %s: %d variants\n", modelName, version, len(ix.Variants))
			printVariants(w, ix)
			fmt.Fprintln(w, d)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&variants, "variant", nil, "push a precision variant FILE[:PRECISION|:REPORT.json] (repeatable; REF becomes a variant index)")
	reg.add(cmd)
	f.StringVar(&modelName, "name", "", "model name (default: the file name without extension)")
	f.StringVar(&version, "version", "", "model version, a positive integer (default: the tag)")
	f.StringVar(&goldenInput, "golden-input", "generated", `golden vector inputs: a JSON file, "generated" or "none"`)
	f.StringVar(&tolerance, "tolerance", "", "golden vector tolerance: abs=A,rel=R or A (default abs=1e-4,rel=1e-3)")
	f.StringVar(&precision, "precision", "fp32", "weight precision: fp32, fp16, bf16, int8, uint8, mixed")
	f.StringSliceVar(&providers, "providers", nil, "preferred execution providers in order, e.g. cuda,cpu")
	f.StringVar(&minAgent, "min-agent-version", "", "oldest agent version that can serve the model")
	f.StringVar(&description, "description", "", "free-text description")
	f.StringArrayVar(&labels, "label", nil, "label KEY=VALUE (repeatable)")
	f.StringArrayVar(&files, "file", nil, "extra file to ship with the model, e.g. labels.txt (repeatable)")
	f.Uint64Var(&seed, "seed", 1, "seed of generated golden inputs")
	f.StringVar(&ortLib, "ort-lib", "", "onnxruntime shared library")
	return cmd
}

// printVariants lists a variant index's entries.
func printVariants(w io.Writer, ix *ota.Index) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PRECISION\tPROVIDERS\tSIZE\tMANIFEST")
	for _, v := range ix.Variants {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\n", v.Precision, strings.Join(v.Providers, ","), v.Descriptor.Size, v.Descriptor.Digest)
	}
	_ = tw.Flush()
}

func parseTolerance(s string) (artifact.Tolerance, error) {
	var tol artifact.Tolerance
	if s == "" {
		return update.DefaultTolerance, nil
	}
	if v, err := strconv.ParseFloat(s, 64); err == nil {
		tol.Abs = v
	} else {
		for _, kv := range strings.Split(s, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
			f, err := strconv.ParseFloat(v, 64)
			if !ok || err != nil {
				return tol, fmt.Errorf("--tolerance %q: want abs=A,rel=R", s)
			}
			switch k {
			case "abs":
				tol.Abs = f
			case "rel":
				tol.Rel = f
			default:
				return tol, fmt.Errorf("--tolerance %q: unknown key %q (abs, rel)", s, k)
			}
		}
	}
	if tol.Abs < 0 || tol.Rel < 0 {
		return tol, fmt.Errorf("--tolerance %q: must not be negative", s)
	}
	return tol, nil
}

func newModelPullCmd(g *globalFlags) *cobra.Command {
	var (
		reg                  registryFlags
		out, data, blobCache string
		providers            []string
	)
	cmd := &cobra.Command{
		Use:   "pull REF (--out DIR | --data DIR)",
		Short: "Pull a model artifact: its files into a folder, or the model into an agent's cache",
		Long: `Pull downloads a model artifact by digest, verified and resumable (an interrupted
pull continues where it stopped). With --out, every file is written under its
title, as ORAS does, plus config.json. With --data, the model is stored in an
agent's cache (the agent must not be running; use 'edgefleet agent update' for a
running agent) as the version its config names, not activated.`,
		Example: `  edgefleet model pull localhost:5000/models/digits-cnn:3 --out ./digits
  edgefleet model pull localhost:5000/models/digits-cnn:3 --data /var/lib/edgefleet`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (out == "") == (data == "") {
				return errors.New("give exactly one of --out DIR and --data DIR")
			}
			opts := reg.options(g, cmd.OutOrStdout())
			if len(providers) > 0 {
				opts = append(opts, ota.WithVariant(ota.Preference{Providers: providers}))
			}
			ctx := cmd.Context()
			if data != "" {
				c, err := openCache(data)
				if err != nil {
					return err
				}
				defer c.Close()
				rec, res, err := update.Fetch(ctx, c, args[0], opts...)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "cached %s version %s (%s, %s) from %s\n", rec.Model, rec.Version, rec.Digest,
					humanize.IBytes(uint64(rec.Size)), res.Ref)
				return nil
			}
			if blobCache == "" {
				dir, err := os.UserCacheDir()
				if err != nil {
					return fmt.Errorf("no user cache folder; set --blob-cache: %w", err)
				}
				blobCache = filepath.Join(dir, "edgefleet", "oci")
			}
			sink, err := ota.NewDirSink(blobCache)
			if err != nil {
				return err
			}
			res, err := ota.Pull(ctx, args[0], sink, opts...)
			if err != nil {
				return err
			}
			if err := sink.Export(res, out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pulled %s version %s (%s)\n", res.Config.Name, res.Config.Version, res.Ref)
			for _, l := range res.Manifest.Layers {
				fmt.Fprintf(cmd.OutOrStdout(), "  %s\n", filepath.Join(out, artifact.Title(l)))
			}
			return nil
		},
	}
	reg.add(cmd)
	cmd.Flags().StringVar(&out, "out", "", "write the artifact's files into this folder")
	cmd.Flags().StringVar(&data, "data", "", "store the model in this agent data folder's cache")
	cmd.Flags().StringSliceVar(&providers, "providers", nil, "for a variant index: pull the variant for these execution providers, e.g. cpu or cuda,cpu")
	cmd.Flags().StringVar(&blobCache, "blob-cache", "", "where --out keeps downloaded blobs for resuming (default: the user cache folder)")
	return cmd
}

func newModelInspectCmd(g *globalFlags) *cobra.Command {
	var (
		reg       registryFlags
		asJSON    bool
		providers []string
	)
	cmd := &cobra.Command{
		Use:   "inspect REF",
		Short: "Show a model artifact's manifest and config without downloading the model",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := reg.options(g, io.Discard)
			w := cmd.OutOrStdout()
			if len(providers) > 0 {
				opts = append(opts, ota.WithVariant(ota.Preference{Providers: providers}))
			}
			res, err := ota.Inspect(cmd.Context(), args[0], opts...)
			if errors.Is(err, ota.ErrIndex) {
				ix, err := ota.InspectIndex(cmd.Context(), args[0], opts...)
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(w).Encode(map[string]any{"ref": ix.Ref.String(), "index": json.RawMessage(ix.Raw)})
				}
				n, v := ix.Model()
				fmt.Fprintf(w, "Reference:  %s\nModel:      %s version %s, %d variants (select one with --providers or by digest)\n", ix.Ref, n, v, len(ix.Variants))
				printVariants(w, ix)
				return nil
			}
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(w).Encode(map[string]any{"ref": res.Ref.String(),
					"manifest": json.RawMessage(res.RawManifest), "config": json.RawMessage(res.RawConfig)})
			}
			c := res.Config
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "Reference:\t%s\n", res.Ref)
			if res.Variant != nil {
				fmt.Fprintf(tw, "Variant of:\t%s (%s)\n", res.Index.Ref, res.Variant)
			}
			fmt.Fprintf(tw, "Model:\t%s version %s (%s)\n", c.Name, c.Version, c.Precision)
			if c.Description != "" {
				fmt.Fprintf(tw, "Description:\t%s\n", c.Description)
			}
			for _, s := range c.Inputs {
				fmt.Fprintf(tw, "Input:\t%s %s %v\n", s.Name, s.Datatype, s.Shape)
			}
			for _, s := range c.Outputs {
				fmt.Fprintf(tw, "Output:\t%s %s %v\n", s.Name, s.Datatype, s.Shape)
			}
			if len(c.ExecutionProviders) > 0 {
				fmt.Fprintf(tw, "Providers:\t%s\n", strings.Join(c.ExecutionProviders, ", "))
			}
			if c.MinAgentVersion != "" {
				fmt.Fprintf(tw, "Min agent:\t%s\n", c.MinAgentVersion)
			}
			if c.Golden != nil {
				fmt.Fprintf(tw, "Golden vector:\t%d inputs, %d outputs, tolerance abs %g rel %g\n",
					len(c.Golden.Inputs), len(c.Golden.Outputs), c.Golden.Tolerance.Abs, c.Golden.Tolerance.Rel)
			} else {
				fmt.Fprintf(tw, "Golden vector:\tnone\n")
			}
			for k, v := range c.Labels {
				fmt.Fprintf(tw, "Label:\t%s=%s\n", k, v)
			}
			fmt.Fprintf(tw, "Size:\t%s\n", humanize.IBytes(uint64(res.Size())))
			fmt.Fprintln(tw, "\nFILE\tMEDIA TYPE\tSIZE\tDIGEST")
			for _, l := range res.Manifest.Layers {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", artifact.Title(l), l.MediaType, humanize.IBytes(uint64(l.Size)), l.Digest)
			}
			return tw.Flush()
		},
	}
	reg.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the manifest and config as JSON")
	cmd.Flags().StringSliceVar(&providers, "providers", nil, "for a variant index: show the variant a device with these execution providers gets, e.g. cuda,cpu")
	return cmd
}

// keyPassword reads the password of an encrypted private key from
// $COSIGN_PASSWORD (as cosign does) or, on a terminal, from a prompt.
func keyPassword() ([]byte, error) {
	if p, ok := os.LookupEnv("COSIGN_PASSWORD"); ok {
		return []byte(p), nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return nil, errors.New("the key is encrypted: set COSIGN_PASSWORD")
	}
	fmt.Fprint(os.Stderr, "Enter password for private key: ")
	p, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(os.Stderr)
	return p, err
}

func newModelSignCmd(g *globalFlags) *cobra.Command {
	var (
		reg registryFlags
		key string
	)
	cmd := &cobra.Command{
		Use:   "sign REF --key KEY",
		Short: "Sign a model artifact with an ECDSA P-256 key, the way `cosign sign --key` does",
		Long: `Sign stores a cosign simple-signing signature of the artifact's digest under the
tag sha256-<hex>.sig in the same repository (see ota/SPEC.md), so 'cosign verify
--key' accepts it. KEY is a PEM private key: ours from 'edgefleet model keygen',
or cosign's encrypted cosign.key (password from $COSIGN_PASSWORD).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" {
				return errors.New("--key is required")
			}
			priv, err := signature.LoadPrivateKey(key, keyPassword)
			if err != nil {
				return err
			}
			s, err := signature.Sign(cmd.Context(), args[0], priv, signature.WithRegistry(reg.options(g, io.Discard)...))
			if err != nil {
				return err
			}
			verb := "signed"
			if s.Existing {
				verb = "already signed with this key"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\nsignature: %s\n", verb, s.Ref, s.Tag)
			return nil
		},
	}
	reg.add(cmd)
	cmd.Flags().StringVar(&key, "key", "", "PEM private key (required)")
	return cmd
}

func newModelVerifyCmd(g *globalFlags) *cobra.Command {
	var (
		reg  registryFlags
		keys []string
	)
	cmd := &cobra.Command{
		Use:   "verify REF --key PUB",
		Short: "Verify a model artifact's signature against trusted public keys",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(keys) == 0 {
				return errors.New("--key is required")
			}
			pubs, err := signature.LoadPublicKeys(keys...)
			if err != nil {
				return err
			}
			v, err := signature.Verify(cmd.Context(), args[0], pubs, signature.WithRegistry(reg.options(g, io.Discard)...))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "verified %s\n", v.Ref)
			return nil
		},
	}
	reg.add(cmd)
	cmd.Flags().StringSliceVar(&keys, "key", nil, "PEM public key file(s) to trust (required)")
	return cmd
}

func newModelKeygenCmd() *cobra.Command {
	var (
		prefix string
		force  bool
	)
	cmd := &cobra.Command{
		Use:   "keygen [--out PREFIX]",
		Short: "Create an ECDSA P-256 key pair for signing models (PREFIX.key, PREFIX.pub)",
		Long: `Keygen writes PREFIX.key (PKCS #8 PEM, unencrypted, mode 0600: keep it secret)
and PREFIX.pub (PKIX PEM, the format of cosign.pub). Configure agents to trust
PREFIX.pub with update.trust_keys.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keyFile, pubFile := prefix+".key", prefix+".pub"
			if !force {
				for _, f := range []string{keyFile, pubFile} {
					if _, err := os.Stat(f); err == nil {
						return fmt.Errorf("%s exists; use --force to overwrite", f)
					}
				}
			}
			priv, err := signature.GenerateKey()
			if err != nil {
				return err
			}
			kb, err := signature.MarshalPrivateKeyPEM(priv)
			if err != nil {
				return err
			}
			pb, err := signature.MarshalPublicKeyPEM(&priv.PublicKey)
			if err != nil {
				return err
			}
			if err := durable.WriteFile(keyFile, kb, 0o600); err != nil {
				return err
			}
			if err := durable.WriteFile(pubFile, pb, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "private key: %s\npublic key:  %s\n", keyFile, pubFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&prefix, "out", "cosign", "file name prefix")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing files")
	return cmd
}

// agentFlag is the --agent flag of the commands that talk to a running agent.
func agentFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVar(p, "agent", "http://127.0.0.1:8080", "the running agent's REST address")
}

func printResult(w io.Writer, r *update.Result) {
	switch r.State {
	case update.ResultAlreadyActive:
		fmt.Fprintf(w, "%s version %s is already active (%s)\n", r.Model, r.Version, r.Ref)
	case update.ResultRolledBack:
		fmt.Fprintf(w, "%s rolled back to version %s (%s)\n", r.Model, r.Version, r.Reason)
	default:
		fmt.Fprintf(w, "%s version %s is active (%s)\n", r.Model, r.Version, r.Ref)
		if r.Previous != "" {
			fmt.Fprintf(w, "previous version %s stays cached for rollback\n", r.Previous)
		}
		if r.State == update.ResultWatching {
			fmt.Fprintf(w, "watching live traffic until %s; a breach rolls back automatically\n", r.WatchUntil.Local().Format("15:04:05"))
		}
	}
}

func newAgentUpdateCmd(g *globalFlags) *cobra.Command {
	var (
		addr string
		o    update.UpdateOptions
	)
	cmd := &cobra.Command{
		Use:   "update MODEL REF",
		Short: "Update a model on a running agent from an OCI registry, without a hub",
		Long: `Update asks the running agent to install REF as MODEL's active version: it
resolves and (with trust keys configured) verifies the artifact, pulls it into
the cache (resumable), checks it against its golden vector, switches requests to
it atomically and watches it, rolling back on a breach. The command waits for
the result. A version older than the newest accepted one needs --allow-rollback.`,
		Example: "  edgefleet agent update digits-cnn localhost:5000/models/digits-cnn:4",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := update.NewClient(addr, nil).Update(cmd.Context(), args[0], args[1], o)
			if err != nil {
				return err
			}
			printResult(cmd.OutOrStdout(), res)
			return nil
		},
	}
	agentFlag(cmd, &addr)
	cmd.Flags().BoolVar(&o.AllowRollback, "allow-rollback", false, "allow a version older than the newest accepted one")
	cmd.Flags().BoolVar(&o.Force, "force", false, "install an artifact that was refused or rolled back before")
	return cmd
}

func newAgentRollbackCmd(g *globalFlags) *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "rollback MODEL",
		Short: "Make a model's previous version active again on a running agent",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := update.NewClient(addr, nil).Rollback(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s version %s is active; version %s is the previous one\n", res.Model, res.Version, res.Previous)
			return nil
		},
	}
	agentFlag(cmd, &addr)
	return cmd
}

func newAgentUpdateStatusCmd(g *globalFlags) *cobra.Command {
	var (
		addr   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "update-status [MODEL]",
		Short: "Show the update state of a running agent's models",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := update.NewClient(addr, nil)
			var ss []*update.Status
			if len(args) == 1 {
				s, err := c.Status(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				ss = []*update.Status{s}
			} else {
				var err error
				if ss, err = c.Statuses(cmd.Context()); err != nil {
					return err
				}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(ss)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MODEL\tACTIVE\tPREVIOUS\tSTATE\tLAST\tREASON")
			for _, s := range ss {
				state := "idle"
				switch {
				case s.Updating:
					state = "updating"
				case s.Pending != nil:
					state = "pending " + s.Pending.Version + " (" + s.Pending.Step + ")"
				case s.Watch != nil:
					state = fmt.Sprintf("watching %s (%d req, %d err, %d NaN)", s.Watch.Version, s.Watch.Requests, s.Watch.Errors, s.Watch.NonFinite)
				}
				last, reason := "", ""
				if s.Last != nil {
					last, reason = s.Last.Result+" "+s.Last.Version, s.Last.Reason
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Model, s.Active, s.Previous, state, last, reason)
			}
			return tw.Flush()
		},
	}
	agentFlag(cmd, &addr)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
