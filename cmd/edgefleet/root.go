package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/agent"
)

type globalFlags struct {
	logLevel  string
	logFormat string
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "edgefleet",
		Short:         "Serve quantized ONNX models on edge boxes and roll them out over the air",
		Version:       agent.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.SetVersionTemplate("edgefleet version {{.Version}} (" + flavor + ")\n")
	agentCmd := newAgentCmd(g)
	root.AddCommand(agentCmd, newModelCmd(g), newHealthCmd())
	addFullCommands(root, agentCmd, g)
	return root
}

func (g *globalFlags) logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if g.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
