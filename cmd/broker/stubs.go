package main

import (
	"context"
	"fmt"
	"io"
)

func notYet(name string) func(context.Context, []string, io.Writer, io.Writer) int {
	return func(_ context.Context, _ []string, _, stderr io.Writer) int {
		fmt.Fprintf(stderr, "broker %s: not implemented yet\n", name)
		return exitFailure
	}
}

var (
	runRun     = notYet("run")
	runReload  = notYet("reload")
	runAdmin   = notYet("admin")
	runHello   = notYet("hello")
	runVersion = notYet("version")
)
