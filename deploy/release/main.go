// Command release builds edgefleet's release artifacts from a checkout with
// only Go, npm (for `make deps`) and Debian tools: no container daemon.
//
//	go run ./deploy/release images   [--out dist/images] [--push REGISTRY/PREFIX] [--arch amd64,arm64] [--flavor agentonly,full]
//	go run ./deploy/release packages [--out dist/packages] [--arch amd64,arm64]
//
// images writes one OCI image layout per image (deploy/images: edgefleet
// and edgefleet-agent, each an index of linux/amd64 and linux/arm64) and,
// with --push, pushes them as PREFIX/NAME:VERSION. packages writes the
// .deb packages (deploy/packages). `make images packages` runs both.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/edgefleet/edgefleet/deploy/images"
	"github.com/edgefleet/edgefleet/deploy/internal/buildenv"
	"github.com/edgefleet/edgefleet/deploy/packages"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "images" && args[0] != "packages") {
		return errors.New("usage: release images|packages [flags]")
	}
	what := args[0]
	fs := flag.NewFlagSet(what, flag.ContinueOnError)
	out := fs.String("out", filepath.Join("dist", what), "output folder")
	archList := fs.String("arch", "amd64,arm64", "architectures")
	push := fs.String("push", "", "images: push to this registry prefix, e.g. 127.0.0.1:5000/edgefleet")
	flavors := fs.String("flavor", "agentonly,full", "images: which images (agentonly: edgefleet-agent, full: edgefleet)")
	binDir := fs.String("bin-dir", "", "where the binaries are built (default OUT/bin)")
	reuse := fs.Bool("reuse-bin", false, "use binaries already in --bin-dir instead of building them")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	root, err := buildenv.Root()
	if err != nil {
		return err
	}
	var arches []buildenv.Arch
	for _, n := range strings.Split(*archList, ",") {
		a, err := buildenv.ArchByName(strings.TrimSpace(n))
		if err != nil {
			return err
		}
		arches = append(arches, a)
	}
	env, err := buildenv.Prepare(ctx, root, arches)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	if *binDir == "" {
		*binDir = filepath.Join(*out, "bin")
	}
	binary := func(a buildenv.Arch, f buildenv.Flavor) (string, error) {
		if *reuse {
			p := filepath.Join(*binDir, string(f)+"-"+a.GOARCH, "edgefleet")
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("--reuse-bin: %w", err)
			}
			return filepath.Abs(p)
		}
		return env.Binary(ctx, a, f, *binDir)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	log.Info("building", "what", what, "version", env.Info.Version, "revision", env.Info.Revision)
	if what == "packages" {
		for _, a := range arches {
			bin, err := binary(a, buildenv.Full)
			if err != nil {
				return err
			}
			p, err := packages.Build(packages.Spec{Arch: a, Binary: bin, ORTLib: env.ORTLibs[a.GOARCH], Info: env.Info}, *out)
			if err != nil {
				return err
			}
			fmt.Println(p)
		}
		return nil
	}
	for _, fl := range strings.Split(*flavors, ",") {
		f := buildenv.Flavor(strings.TrimSpace(fl))
		if f != buildenv.AgentOnly && f != buildenv.Full {
			return fmt.Errorf("--flavor %q: want agentonly or full", fl)
		}
		var plats []images.Platform
		for _, a := range arches {
			bin, err := binary(a, f)
			if err != nil {
				return err
			}
			plats = append(plats, images.Platform{Arch: a, Binary: bin, ORTLib: env.ORTLibs[a.GOARCH], Debs: env.Debs[a.GOARCH]})
		}
		spec := images.Spec{Flavor: f, Info: env.Info}
		idx, err := images.Build(ctx, spec, plats)
		if err != nil {
			return err
		}
		dir := filepath.Join(*out, spec.Name())
		os.RemoveAll(dir)
		p, err := layout.Write(dir, empty.Index)
		if err != nil {
			return err
		}
		if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": env.Info.Version})); err != nil {
			return err
		}
		d, _ := idx.Digest()
		fmt.Printf("%s %s (OCI layout %s)\n", spec.Name(), d, dir)
		im, err := idx.IndexManifest()
		if err != nil {
			return err
		}
		for _, m := range im.Manifests {
			img, err := idx.Image(m.Digest)
			if err != nil {
				return err
			}
			s, err := images.SizeOf(img)
			if err != nil {
				return err
			}
			fmt.Printf("  %s/%s %s: %.1f MB compressed, %.1f MB unpacked\n", m.Platform.OS, m.Platform.Architecture, m.Digest, float64(s.Compressed)/1e6, float64(s.Unpacked)/1e6)
		}
		if *push != "" {
			ref := strings.TrimSuffix(*push, "/") + "/" + spec.Name() + ":" + strings.ReplaceAll(env.Info.Version, "+", "_")
			pd, err := images.Push(ctx, ref, idx)
			if err != nil {
				return err
			}
			fmt.Printf("  pushed %s (%s)\n", ref, pd.DigestStr())
		}
	}
	return nil
}
