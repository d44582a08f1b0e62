package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/cache"
	"github.com/edgefleet/edgefleet/agent/runtime"
)

func newModelCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "model",
		Short: "Manage models: the local cache, OCI artifacts (push, pull, sign, verify)",
	}
	cmd.AddCommand(newModelImportCmd(g), newModelLsCmd(), newModelRmCmd())
	cmd.AddCommand(newOTAModelCmds(g)...)
	return cmd
}

func openCache(data string) (*cache.Cache, error) {
	if data == "" {
		return nil, fmt.Errorf("--data is required")
	}
	if err := os.MkdirAll(data, 0o750); err != nil {
		return nil, err
	}
	c, err := cache.Open(filepath.Join(data, agent.CacheFile), cache.Options{LockTimeout: 2 * time.Second})
	return c, lockedHint(err)
}

// lockedHint adds the way out to a locked-cache error.
func lockedHint(err error) error {
	if errors.Is(err, cache.ErrLocked) {
		return fmt.Errorf("%w\nan agent is running on this data folder: pass --agent http://127.0.0.1:8080 to go through it", err)
	}
	return err
}

// importViaAgent sends the model to a running agent's repository API, which
// writes it to the cache and loads it.
func importViaAgent(ctx context.Context, agentURL, name, version string, b []byte) error {
	u := strings.TrimRight(agentURL, "/") + "/v2/repository/models/" + url.PathEscape(name) + "/load"
	if version != "" {
		u += "?version=" + url.QueryEscape(version)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("contacting the agent: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("agent refused the model: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}

func newModelImportCmd(g *globalFlags) *cobra.Command {
	var data, name, version, ortLib, agentURL string
	cmd := &cobra.Command{
		Use:     "import --data DIR --name NAME [--version N] FILE.onnx",
		Short:   "Import an ONNX model file into the cache as a new version",
		Example: "  edgefleet model import --data .data/agent --name digits-cnn agent/testdata/digits/cnn.onnx",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" {
				return fmt.Errorf("--name is required")
			}
			if (data == "") == (agentURL == "") {
				return fmt.Errorf("give exactly one of --data DIR (agent stopped) or --agent URL (agent running)")
			}
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			if agentURL != "" {
				if err := importViaAgent(cmd.Context(), agentURL, name, version, b); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "imported %s into the agent at %s and loaded it\n", name, agentURL)
				return nil
			}
			if _, err := runtime.Init(ortLib); err != nil {
				return err
			}
			ins, outs, err := runtime.Inspect(b)
			if err != nil {
				return fmt.Errorf("%s is not a model onnxruntime can load: %w", args[0], err)
			}
			c, err := openCache(data)
			if err != nil {
				return err
			}
			defer c.Close()
			abs, _ := filepath.Abs(args[0])
			rec, err := c.ImportModel(cmd.Context(), name, version, b, cache.VersionRecord{
				Inputs: cacheSpecs(ins), Outputs: cacheSpecs(outs), Source: "file:" + abs,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported %s version %s (%s, %s)\n", rec.Model, rec.Version, rec.Digest, humanize.IBytes(uint64(rec.Size)))
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "agent data folder (required)")
	cmd.Flags().StringVar(&name, "name", "", "model name (required)")
	cmd.Flags().StringVar(&version, "version", "", "version (default: the next integer)")
	cmd.Flags().StringVar(&ortLib, "ort-lib", "", "onnxruntime shared library")
	cmd.Flags().StringVar(&agentURL, "agent", "", "import through a running agent's REST API (e.g. http://127.0.0.1:8080) instead of --data")
	return cmd
}

func cacheSpecs(in []runtime.IOSpec) []cache.TensorSpec {
	out := make([]cache.TensorSpec, len(in))
	for i, s := range in {
		out[i] = cache.TensorSpec{Name: s.Name, DType: s.DType.String(), Shape: s.Shape}
	}
	return out
}

func newModelLsCmd() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "ls --data DIR",
		Short: "List cached models and versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := openCache(data)
			if err != nil {
				return err
			}
			defer c.Close()
			ms, err := c.Models()
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MODEL\tVERSION\tACTIVE\tSIZE\tDIGEST\tIMPORTED\tSOURCE")
			for _, m := range ms {
				for _, v := range m.Versions {
					act := ""
					if m.Active() == v.Version {
						act = "*"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.19s\t%s\t%s\n", m.Name, v.Version, act, humanize.IBytes(uint64(v.Size)),
						v.Digest, v.Imported.Local().Format(time.DateTime), v.Source)
				}
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "agent data folder (required)")
	return cmd
}

func newModelRmCmd() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "rm --data DIR NAME [VERSION]",
		Short: "Remove a model version (or every version of a model) from the cache",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := openCache(data)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			if len(args) == 2 {
				err = c.RemoveVersion(ctx, args[0], args[1])
			} else {
				err = c.RemoveModel(ctx, args[0])
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", joinArgs(args))
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "agent data folder (required)")
	return cmd
}

func joinArgs(a []string) string {
	if len(a) == 2 {
		return a[0] + " version " + a[1]
	}
	return a[0]
}
