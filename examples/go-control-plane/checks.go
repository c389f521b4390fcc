package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/proto"

	vmprocessv1 "github.com/vmprocd/vmprocd/gen/go/vmprocess/v1"
)

func expectProcess(call string, p *vmprocessv1.ProcessInfo, state vmprocessv1.ProcessState, vm vmprocessv1.VmState) error {
	if p.GetState() != state || p.GetVmState() != vm {
		return deviation("%s: process %s with VM %s, want %s with %s", call, p.GetState(), p.GetVmState(), state, vm)
	}
	return nil
}

// expectStopped checks an exit that StopProcess (or a hibernating snapshot, to snapshotURL) caused.
func expectStopped(call string, exit *vmprocessv1.ProcessExit, snapshotURL string) error {
	if exit.GetReason() != vmprocessv1.ExitReason_EXIT_REASON_STOPPED {
		return deviation("%s: exit reason %s (%s), want %s", call, exit.GetReason(), exit.GetMessage(), vmprocessv1.ExitReason_EXIT_REASON_STOPPED)
	}
	if exit.GetSnapshotUrl() != snapshotURL {
		return deviation("%s: exit names snapshot %q, want %q", call, exit.GetSnapshotUrl(), snapshotURL)
	}
	return nil
}

// expectEvents takes the next events of p's sandbox from WatchEvents and checks that they are
// these kinds, in this order, all caused by the daemon (every step here is an RPC), of p's VMM.
// It returns them, for their details.
func (cp *controlPlane) expectEvents(ctx context.Context, step string, p *vmprocessv1.ProcessInfo, kinds ...vmprocessv1.EventKind) ([]*vmprocessv1.ProcessEvent, error) {
	waitCtx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	id := p.GetSandboxId()
	got, err := cp.events.take(waitCtx, id, len(kinds))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	for i, e := range got {
		if e.GetKind() != kinds[i] || e.GetOrigin() != vmprocessv1.EventOrigin_EVENT_ORIGIN_DAEMON || e.GetPid() != p.GetPid() {
			return nil, deviation("WatchEvents, %s of %s: events %s, want %s from the daemon, of pid %d", step, id, brief(got), kindNames(kinds), p.GetPid())
		}
	}
	cp.log.Printf("events of %s (%s): %s", id, step, brief(got))
	return got, nil
}

// brief spells events as `#SEQUENCE KIND ORIGIN pid PID`.
func brief(events []*vmprocessv1.ProcessEvent) string {
	parts := make([]string, len(events))
	for i, e := range events {
		parts[i] = fmt.Sprintf("#%d %s %s pid %d", e.GetSequence(), shortKind(e.GetKind()), strings.TrimPrefix(e.GetOrigin().String(), "EVENT_ORIGIN_"), e.GetPid())
	}
	return strings.Join(parts, ", ")
}

func kindNames(kinds []vmprocessv1.EventKind) string {
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = shortKind(k)
	}
	return strings.Join(parts, ", ")
}

func shortKind(k vmprocessv1.EventKind) string { return strings.TrimPrefix(k.String(), "EVENT_KIND_") }

// snapshotFiles are what Cloud Hypervisor writes into a snapshot directory.
var snapshotFiles = []string{"config.json", "state.json", "memory-ranges"}

// expectSnapshotFiles checks that the snapshot directory holds Cloud Hypervisor's files. It reads
// the daemon's file system directly: this program talks plaintext, which the daemon allows only on
// its unix socket and on loopback, so it runs on the daemon's host (as in CI).
func expectSnapshotFiles(url string) error {
	dir := strings.TrimPrefix(url, "file://")
	for _, name := range snapshotFiles {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return deviation("snapshot %s: %v", url, err)
		}
	}
	return nil
}

// expectVmConfig checks that Cloud Hypervisor's VM has the config this program gives it: at boot,
// and after a restore, which brings back the snapshot's.
func expectVmConfig(call string, info *vmprocessv1.VmInfo, cfg config) error {
	if info.GetVcpus() != uint32(cfg.vcpus) || info.GetMemoryBytes() != cfg.memoryMiB<<20 {
		return deviation("%s: %d vCPUs and %d bytes of memory, not the %d and %d MiB asked for",
			call, info.GetVcpus(), info.GetMemoryBytes(), cfg.vcpus, cfg.memoryMiB)
	}
	// The rest of the config is only in vm.info's JSON (Cloud Hypervisor's VmConfig).
	var raw struct {
		Config struct {
			Payload struct {
				Cmdline string `json:"cmdline"`
			} `json:"payload"`
			Net []struct {
				ID  string `json:"id"`
				Tap string `json:"tap"`
			} `json:"net"`
		} `json:"config"`
	}
	if err := json.Unmarshal([]byte(info.GetRawJson()), &raw); err != nil {
		return deviation("%s: raw_json is not vm.info's JSON: %v", call, err)
	}
	c := raw.Config
	if c.Payload.Cmdline != cfg.cmdline || len(c.Net) != 1 || c.Net[0].ID != "net0" || c.Net[0].Tap != cfg.tap {
		return deviation("%s: command line %q and network interfaces %+v, want %q and net0 on %s", call, c.Payload.Cmdline, c.Net, cfg.cmdline, cfg.tap)
	}
	return nil
}

// expectExitEvent checks that an EXITED event carries the exit as WatchExits sent it.
func expectExitEvent(step string, event *vmprocessv1.ProcessEvent, exit *vmprocessv1.ProcessExit) error {
	if !proto.Equal(event.GetExit(), exit) {
		return deviation("WatchEvents, %s of %s: EXITED event #%d carries exit %v, but WatchExits sent %v", step, exit.GetSandboxId(), event.GetSequence(), event.GetExit(), exit)
	}
	return nil
}
