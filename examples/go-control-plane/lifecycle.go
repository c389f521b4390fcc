package main

import (
	"context"
	"fmt"
	"log"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	vmprocessv1 "github.com/vmprocd/vmprocd/gen/go/vmprocess/v1"
)

const (
	// callTimeout is the deadline of a call that does not wait for a VM: the daemon answers those
	// in milliseconds, a loaded host in seconds.
	callTimeout = 30 * time.Second
	// readyTimeout is StartProcess's ready_timeout: the VMM answers, and its VM booted or restored.
	readyTimeout = 30 * time.Second
	// stopGrace is StopProcess's grace period before SIGKILL.
	stopGrace = 10 * time.Second
	// snapshotTimeout covers writing all of guest memory (about a second a GiB), then the
	// hibernating stop (SIGTERM, SIGKILL after 10 s).
	snapshotTimeout = 2 * time.Minute
)

// labels mark the processes this program starts (ListProcesses can filter on them).
var labels = map[string]string{"app": "go-control-plane"}

// controlPlane drives one VM through its life, checking every answer against what the API
// promises, and every step's events; the first deviation, or failed call, ends the run.
type controlPlane struct {
	client vmprocessv1.VmProcessServiceClient
	cfg    config
	log    *log.Logger
	exits  *exitWatcher
	events *eventWatcher
	// Sandboxes this run started whose exit it has not seen: stopped if the run fails.
	live map[string]bool
}

func newControlPlane(client vmprocessv1.VmProcessServiceClient, cfg config, logger *log.Logger) *controlPlane {
	return &controlPlane{client: client, cfg: cfg, log: logger, live: map[string]bool{}}
}

// run is the whole life: boot, pause and resume, hibernate, restore elsewhere, stop. Every exit
// is also awaited on WatchExits, and every step's events on WatchEvents, both followed from
// before the first start.
func (cp *controlPlane) run(ctx context.Context) (err error) {
	latest, err := cp.latestSequences(ctx)
	if err != nil {
		return err
	}
	watchCtx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	sandboxes := []string{cp.cfg.sandbox, cp.cfg.restoredSandbox()}
	cp.exits = newExitWatcher(cp.client, sandboxes, latest.GetLatestExitSequence(), cp.log)
	cp.events = newEventWatcher(cp.client, sandboxes, latest.GetLatestEventSequence(), cp.log)
	go cp.exits.run(watchCtx)
	go cp.events.run(watchCtx)
	defer func() {
		if err != nil {
			cp.stopLeftovers(ctx)
		}
	}()

	booted, err := cp.boot(ctx)
	if err != nil {
		return err
	}
	if err := cp.pauseAndResume(ctx, booted); err != nil {
		return err
	}
	hibernated, err := cp.hibernate(ctx, booted)
	if err != nil {
		return err
	}
	restored, err := cp.restore(ctx, hibernated)
	if err != nil {
		return err
	}
	stopped, err := cp.stop(ctx, restored)
	if err != nil {
		return err
	}
	if stopped.GetSequence() <= hibernated.exit.GetSequence() {
		return deviation("the stop's exit has sequence %d, not after the hibernation's %d", stopped.GetSequence(), hibernated.exit.GetSequence())
	}
	cp.log.Printf("done: %s booted, paused, resumed and hibernated to %s; restored as %s in network namespace %s; stopped (exits #%d and #%d)",
		booted.GetSandboxId(), hibernated.url, restored.GetSandboxId(), restored.GetNetworkNamespace(), hibernated.exit.GetSequence(), stopped.GetSequence())
	return nil
}

// latestSequences are where the watches start: the latest exit and event sequences, so that
// they see everything of this run and nothing before it. The first call, so it tells an
// unreachable daemon apart.
func (cp *controlPlane) latestSequences(ctx context.Context) (*vmprocessv1.GetLatestSequenceResponse, error) {
	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	latest, err := cp.client.GetLatestSequence(callCtx, &vmprocessv1.GetLatestSequenceRequest{})
	if status.Code(err) == codes.Unavailable {
		return nil, fmt.Errorf("cannot reach vmprocd at %s: %w", cp.cfg.address, failed("GetLatestSequence", err))
	}
	if err != nil {
		return nil, failed("GetLatestSequence", err)
	}
	cp.log.Printf("connected to %s; watching exits after sequence %d and events after sequence %d",
		cp.cfg.address, latest.GetLatestExitSequence(), latest.GetLatestEventSequence())
	return latest, nil
}

// boot starts a VMM with a VM booted in it: the kernel and rootfs from the flags, one vCPU count,
// memory size and NIC on the TAP in the network namespace.
func (cp *controlPlane) boot(ctx context.Context) (*vmprocessv1.ProcessInfo, error) {
	id := cp.cfg.sandbox
	call := "StartProcess " + id
	callCtx, cancel := context.WithTimeout(ctx, readyTimeout+callTimeout)
	defer cancel()
	started, err := cp.client.StartProcess(callCtx, &vmprocessv1.StartProcessRequest{
		SandboxId:        id,
		Mode:             vmprocessv1.LaunchMode_LAUNCH_MODE_BOOT,
		KernelPath:       cp.cfg.kernel,
		RootfsPath:       cp.cfg.rootfs,
		NetworkNamespace: cp.cfg.netns,
		ReadyTimeout:     durationpb.New(readyTimeout),
		Labels:           labels,
		Vm: &vmprocessv1.VmConfig{
			Vcpus:     uint32(cp.cfg.vcpus),
			MemoryMib: cp.cfg.memoryMiB,
			Cmdline:   cp.cfg.cmdline,
			Net:       []*vmprocessv1.NetConfig{{Id: "net0", Tap: cp.cfg.tap}},
		},
	})
	if err != nil {
		return nil, failed(call, err)
	}
	p := started.GetProcess()
	cp.live[id] = true
	if err := expectProcess(call, p, vmprocessv1.ProcessState_PROCESS_STATE_RUNNING, vmprocessv1.VmState_VM_STATE_RUNNING); err != nil {
		return nil, err
	}
	cp.log.Printf("booted %s: pid %d, VMM %s, ready in %v, network namespace %s",
		id, p.GetPid(), p.GetVmmVersion(), p.GetReadyAt().AsTime().Sub(p.GetStartedAt().AsTime()).Round(time.Millisecond), p.GetNetworkNamespace())
	if _, err := cp.expectEvents(ctx, "boot", p, vmprocessv1.EventKind_EVENT_KIND_STARTED, vmprocessv1.EventKind_EVENT_KIND_VM_BOOTED, vmprocessv1.EventKind_EVENT_KIND_READY); err != nil {
		return nil, err
	}
	info, err := cp.vmInfo(ctx, id, vmprocessv1.VmState_VM_STATE_RUNNING)
	if err != nil {
		return nil, err
	}
	if err := expectVmConfig("GetVmInfo "+id, info, cp.cfg); err != nil {
		return nil, err
	}
	// The guest runs: its console shows it booting, then counting.
	c, err := cp.readConsole(ctx, id, true, func(c console) bool { return len(c.ticks) > 0 })
	if err != nil {
		return nil, err
	}
	if !c.booted {
		return nil, deviation("StreamLogs %s: the guest ticks with no boot line before", id)
	}
	if err := expectCounting("StreamLogs "+id, c.ticks, 1); err != nil {
		return nil, err
	}
	cp.log.Printf("console of %s: tiny-guest: tick %d", id, c.ticks[len(c.ticks)-1])
	return p, nil
}

// pauseAndResume pauses the VM, checks that Cloud Hypervisor says it is paused, and resumes it.
func (cp *controlPlane) pauseAndResume(ctx context.Context, p *vmprocessv1.ProcessInfo) error {
	id := p.GetSandboxId()
	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	paused, err := cp.client.PauseVm(callCtx, &vmprocessv1.PauseVmRequest{SandboxId: id})
	cancel()
	if err != nil {
		return failed("PauseVm "+id, err)
	}
	if err := expectProcess("PauseVm "+id, paused.GetProcess(), vmprocessv1.ProcessState_PROCESS_STATE_RUNNING, vmprocessv1.VmState_VM_STATE_PAUSED); err != nil {
		return err
	}
	if _, err := cp.vmInfo(ctx, id, vmprocessv1.VmState_VM_STATE_PAUSED); err != nil {
		return err
	}
	cp.log.Printf("paused %s: GetVmInfo says %s", id, vmprocessv1.VmState_VM_STATE_PAUSED)
	callCtx, cancel = context.WithTimeout(ctx, callTimeout)
	resumed, err := cp.client.ResumeVm(callCtx, &vmprocessv1.ResumeVmRequest{SandboxId: id})
	cancel()
	if err != nil {
		return failed("ResumeVm "+id, err)
	}
	if err := expectProcess("ResumeVm "+id, resumed.GetProcess(), vmprocessv1.ProcessState_PROCESS_STATE_RUNNING, vmprocessv1.VmState_VM_STATE_RUNNING); err != nil {
		return err
	}
	if _, err := cp.vmInfo(ctx, id, vmprocessv1.VmState_VM_STATE_RUNNING); err != nil {
		return err
	}
	cp.log.Printf("resumed %s", id)
	_, err = cp.expectEvents(ctx, "pause and resume", p, vmprocessv1.EventKind_EVENT_KIND_PAUSED, vmprocessv1.EventKind_EVENT_KIND_RESUMED)
	return err
}

// stop stops the VMM (SIGTERM, SIGKILL after the grace period) and waits for its exit on the stream.
func (cp *controlPlane) stop(ctx context.Context, p *vmprocessv1.ProcessInfo) (*vmprocessv1.ProcessExit, error) {
	id := p.GetSandboxId()
	call := "StopProcess " + id
	callCtx, cancel := context.WithTimeout(ctx, stopGrace+callTimeout)
	defer cancel()
	stopped, err := cp.client.StopProcess(callCtx, &vmprocessv1.StopProcessRequest{SandboxId: id, GracePeriod: durationpb.New(stopGrace)})
	if err != nil {
		return nil, failed(call, err)
	}
	after := stopped.GetProcess()
	if after.GetState() != vmprocessv1.ProcessState_PROCESS_STATE_EXITED {
		return nil, deviation("%s: process %s, want %s", call, after.GetState(), vmprocessv1.ProcessState_PROCESS_STATE_EXITED)
	}
	delete(cp.live, id)
	if err := expectStopped(call, after.GetExit(), ""); err != nil {
		return nil, err
	}
	exit, err := cp.exits.waitFor(ctx, "the exit of "+id, runOf(p))
	if err != nil {
		return nil, err
	}
	if err := expectStopped("WatchExits", exit, ""); err != nil {
		return nil, err
	}
	if exit.GetSequence() != after.GetExit().GetSequence() {
		return nil, deviation("WatchExits: exit #%d of %s, but StopProcess answered with exit #%d", exit.GetSequence(), id, after.GetExit().GetSequence())
	}
	cp.log.Printf("stopped %s; exit #%d on the stream: %s: %s", id, exit.GetSequence(), exit.GetReason(), exit.GetMessage())
	events, err := cp.expectEvents(ctx, "stop", p, vmprocessv1.EventKind_EVENT_KIND_EXITED)
	if err != nil {
		return nil, err
	}
	if err := expectExitEvent("stop", events[0], exit); err != nil {
		return nil, err
	}
	return exit, nil
}

// vmInfo reads the VM as Cloud Hypervisor describes it and checks its state.
func (cp *controlPlane) vmInfo(ctx context.Context, id string, want vmprocessv1.VmState) (*vmprocessv1.VmInfo, error) {
	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	info, err := cp.client.GetVmInfo(callCtx, &vmprocessv1.GetVmInfoRequest{SandboxId: id})
	if err != nil {
		return nil, failed("GetVmInfo "+id, err)
	}
	if got := info.GetVm().GetState(); got != want {
		return nil, deviation("GetVmInfo %s: state %s, want %s", id, got, want)
	}
	return info.GetVm(), nil
}

// stopLeftovers stops what a failed run started, so that it leaves no VMM behind. Detached from
// ctx, which may be what failed the run.
func (cp *controlPlane) stopLeftovers(ctx context.Context) {
	ids := make([]string, 0, len(cp.live))
	for id := range cp.live {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopGrace+callTimeout)
		_, err := cp.client.StopProcess(callCtx, &vmprocessv1.StopProcessRequest{SandboxId: id, GracePeriod: durationpb.New(stopGrace)})
		cancel()
		if err != nil {
			cp.log.Printf("cleaning up: %v", failed("StopProcess "+id, err))
		} else {
			cp.log.Printf("cleaning up: stopped %s", id)
		}
	}
}

// runOf matches the exits of one run of a sandbox: its sandbox ID and PID.
func runOf(p *vmprocessv1.ProcessInfo) func(*vmprocessv1.ProcessExit) bool {
	return func(e *vmprocessv1.ProcessExit) bool {
		return e.GetSandboxId() == p.GetSandboxId() && e.GetPid() == p.GetPid()
	}
}
