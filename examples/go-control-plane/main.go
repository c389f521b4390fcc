// Command go-control-plane is a small control plane for vmprocd, in Go: it boots a VM in a
// Cloud Hypervisor VMM, pauses and resumes it, hibernates it into a snapshot, restores the
// snapshot in another sandbox and network namespace, and stops it, following every exit on
// WatchExits and every event on WatchEvents. It checks each answer, each step's events and the
// guest's console against the API and exits non-zero at the first deviation.
//
//	go-control-plane -address unix:///run/vmprocd/vmprocd.sock -kernel /srv/tiny-guest.elf \
//	  -rootfs /srv/rootfs.ext4 -netns sb-a -restore-netns sb-b -snapshots /srv/snapshots
//
// Exit codes: 0 done; 1 a call failed or an answer deviated (stderr says which); 2 usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"

	vmprocessv1 "github.com/vmprocd/vmprocd/gen/go/vmprocess/v1"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "go-control-plane: %v\n", err)
		return 2
	}
	// Ctrl-C ends the run like a deviation: what it started is stopped on the way out.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()

	conn, err := dial(cfg.address)
	if err != nil {
		fmt.Fprintf(stderr, "go-control-plane: %v\n", err)
		return 2
	}
	defer conn.Close()
	logger := log.New(stdout, "", log.Ltime|log.Lmicroseconds)
	if err := newControlPlane(vmprocessv1.NewVmProcessServiceClient(conn), cfg, logger).run(ctx); err != nil {
		fmt.Fprintf(stderr, "go-control-plane: %v\n", err)
		return 1
	}
	return 0
}
