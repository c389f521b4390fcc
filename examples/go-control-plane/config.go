package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"
)

// config is what one run drives: where the daemon is, and the VM to boot, snapshot and restore.
type config struct {
	address      string
	kernel       string
	rootfs       string
	netns        string
	restoreNetns string
	tap          string
	snapshots    string
	sandbox      string
	vcpus        uint
	memoryMiB    uint64
	cmdline      string
	timeout      time.Duration
}

// restoredSandbox is the sandbox the snapshot is restored in: another one, as a control plane
// moving a VM would use.
func (c config) restoredSandbox() string { return c.sandbox + "-restored" }

// errUsage marks a command line that cannot be run; main exits 2 for it, having sent nothing.
var errUsage = errors.New("usage")

// parseFlags reads the command line. Paths are the daemon host's: the daemon checks them (absolute,
// under an image root), so they are not checked here.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("go-control-plane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: go-control-plane -kernel PATH -rootfs PATH -netns NAME -restore-netns NAME -snapshots DIR [flags]")
		fmt.Fprintln(stderr, "Boots a VM, pauses, resumes and hibernates it, restores it in another sandbox and network namespace, and stops it.")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.address, "address", "unix:///run/vmprocd/vmprocd.sock", "the daemon: unix:///path, a socket path, or host:port (plaintext)")
	fs.StringVar(&c.kernel, "kernel", "", "the guest kernel, on the daemon's host (required): the tiny guest (build/native/tiny-guest.elf), whose console the run checks")
	fs.StringVar(&c.rootfs, "rootfs", "", "the root file system image, on the daemon's host (required)")
	fs.StringVar(&c.netns, "netns", "", "network namespace to boot the VM in (required); it must hold the TAP")
	fs.StringVar(&c.restoreNetns, "restore-netns", "", "another network namespace, to restore the VM in (required); it must hold a TAP of the same name")
	fs.StringVar(&c.tap, "tap", "tap0", "the TAP device of the VM's network interface, in both namespaces")
	fs.StringVar(&c.snapshots, "snapshots", "", "directory under one of the daemon's image roots; the snapshot is a new directory in it (required)")
	fs.StringVar(&c.sandbox, "sandbox", "go-demo", "sandbox ID of the booted VM; the restored one is <sandbox>-restored")
	fs.UintVar(&c.vcpus, "vcpus", 1, "vCPUs of the VM")
	fs.Uint64Var(&c.memoryMiB, "memory-mib", 64, "memory of the VM, in MiB")
	fs.StringVar(&c.cmdline, "cmdline", "console=ttyS0", "kernel command line")
	fs.DurationVar(&c.timeout, "timeout", 3*time.Minute, "deadline of the whole run")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	for _, required := range []struct{ name, value string }{
		{"kernel", c.kernel}, {"rootfs", c.rootfs}, {"netns", c.netns}, {"restore-netns", c.restoreNetns}, {"snapshots", c.snapshots},
	} {
		if required.value == "" {
			return c, fmt.Errorf("%w: -%s is required", errUsage, required.name)
		}
	}
	if c.netns == c.restoreNetns {
		return c, fmt.Errorf("%w: -restore-netns must differ from -netns: the restore shows the VM moving", errUsage)
	}
	if c.vcpus < 1 || c.vcpus > 254 {
		return c, fmt.Errorf("%w: -vcpus %d: 1 to 254", errUsage, c.vcpus)
	}
	if c.timeout <= 0 {
		return c, fmt.Errorf("%w: -timeout must be positive", errUsage)
	}
	return c, nil
}
