package main

import (
	"context"
	"fmt"
	"path"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	vmprocessv1 "github.com/vmprocd/vmprocd/gen/go/vmprocess/v1"
)

// hibernation is a VM gone to disk: where its snapshot is, its VMM's exit, and the guest's last
// tick before it, after which the restored guest must carry on.
type hibernation struct {
	url      string
	exit     *vmprocessv1.ProcessExit
	lastTick int
}

// hibernate snapshots the VM into a new directory under -snapshots and stops its VMM
// (AFTER_SNAPSHOT_STOP), then waits for that exit on the stream, which names the snapshot.
func (cp *controlPlane) hibernate(ctx context.Context, p *vmprocessv1.ProcessInfo) (hibernation, error) {
	id := p.GetSandboxId()
	call := "SnapshotVm " + id
	destination := "file://" + path.Join(cp.cfg.snapshots, fmt.Sprintf("%s-%s", id, time.Now().UTC().Format("20060102T150405.000000")))
	callCtx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	snapshot, err := cp.client.SnapshotVm(callCtx, &vmprocessv1.SnapshotVmRequest{
		SandboxId:      id,
		DestinationUrl: destination,
		AfterSnapshot:  vmprocessv1.AfterSnapshot_AFTER_SNAPSHOT_STOP,
	})
	if err != nil {
		return hibernation{}, failed(call, err)
	}
	url := snapshot.GetSnapshotUrl()
	after := snapshot.GetProcess()
	if after.GetState() != vmprocessv1.ProcessState_PROCESS_STATE_EXITED {
		return hibernation{}, deviation("%s: process %s after a hibernating snapshot, want %s", call, after.GetState(), vmprocessv1.ProcessState_PROCESS_STATE_EXITED)
	}
	delete(cp.live, id)
	if url == "" {
		return hibernation{}, deviation("%s: no snapshot_url in the answer", call)
	}
	if err := expectStopped(call, after.GetExit(), url); err != nil {
		return hibernation{}, err
	}
	if err := expectSnapshotFiles(url); err != nil {
		return hibernation{}, err
	}
	cp.log.Printf("hibernated %s into %s: %v there", id, url, snapshotFiles)

	exit, err := cp.exits.waitFor(ctx, "the exit of "+id, runOf(p))
	if err != nil {
		return hibernation{}, err
	}
	if err := expectStopped("WatchExits", exit, url); err != nil {
		return hibernation{}, err
	}
	if exit.GetSequence() != after.GetExit().GetSequence() {
		return hibernation{}, deviation("WatchExits: exit #%d of %s, but SnapshotVm answered with exit #%d", exit.GetSequence(), id, after.GetExit().GetSequence())
	}
	cp.log.Printf("exit #%d of %s on the stream: %s, snapshot %s: %s", exit.GetSequence(), id, exit.GetReason(), exit.GetSnapshotUrl(), exit.GetMessage())

	events, err := cp.expectEvents(ctx, "hibernate", p, vmprocessv1.EventKind_EVENT_KIND_PAUSED, vmprocessv1.EventKind_EVENT_KIND_SNAPSHOTTED, vmprocessv1.EventKind_EVENT_KIND_EXITED)
	if err != nil {
		return hibernation{}, err
	}
	if got := events[1].GetSnapshot().GetSnapshotUrl(); got != url {
		return hibernation{}, deviation("WatchEvents, hibernate of %s: SNAPSHOTTED names %q, but SnapshotVm answered %q", id, got, url)
	}
	if err := expectExitEvent("hibernate", events[2], exit); err != nil {
		return hibernation{}, err
	}

	// The log of an exited sandbox is still there: the guest's last words before the snapshot.
	c, err := cp.readConsole(ctx, id, false, nil)
	if err != nil {
		return hibernation{}, err
	}
	if len(c.ticks) == 0 {
		return hibernation{}, deviation("StreamLogs %s: no tick on the guest's console before the snapshot", id)
	}
	if err := expectCounting("StreamLogs "+id, c.ticks, 1); err != nil {
		return hibernation{}, err
	}
	return hibernation{url: url, exit: exit, lastTick: c.ticks[len(c.ticks)-1]}, nil
}

// restore starts another sandbox, in the other network namespace, from the snapshot, resumed:
// the same VM, whose guest carries on counting.
func (cp *controlPlane) restore(ctx context.Context, h hibernation) (*vmprocessv1.ProcessInfo, error) {
	id := cp.cfg.restoredSandbox()
	call := "StartProcess " + id + " (restore)"
	callCtx, cancel := context.WithTimeout(ctx, readyTimeout+callTimeout)
	defer cancel()
	// Copy loads all of guest memory before the restore returns; ON_DEMAND pages it in lazily,
	// and a snapshot of the VM is refused until it has all been loaded.
	memory := vmprocessv1.MemoryRestoreMode_MEMORY_RESTORE_MODE_COPY
	started, err := cp.client.StartProcess(callCtx, &vmprocessv1.StartProcessRequest{
		SandboxId:        id,
		Mode:             vmprocessv1.LaunchMode_LAUNCH_MODE_RESTORE,
		RootfsPath:       cp.cfg.rootfs,
		NetworkNamespace: cp.cfg.restoreNetns,
		ReadyTimeout:     durationpb.New(readyTimeout),
		Labels:           labels,
		Restore:          &vmprocessv1.RestoreConfig{SourceUrl: h.url, MemoryRestoreMode: memory, Resume: true},
	})
	if err != nil {
		return nil, failed(call, err)
	}
	p := started.GetProcess()
	cp.live[id] = true
	if err := expectProcess(call, p, vmprocessv1.ProcessState_PROCESS_STATE_RUNNING, vmprocessv1.VmState_VM_STATE_RUNNING); err != nil {
		return nil, err
	}
	if p.GetMode() != vmprocessv1.LaunchMode_LAUNCH_MODE_RESTORE || p.GetNetworkNamespace() != cp.cfg.restoreNetns {
		return nil, deviation("%s: mode %s in network namespace %q, want %s in %q",
			call, p.GetMode(), p.GetNetworkNamespace(), vmprocessv1.LaunchMode_LAUNCH_MODE_RESTORE, cp.cfg.restoreNetns)
	}
	// resume: true is Cloud Hypervisor's own: it resumes the VM it restored, paused.
	events, err := cp.expectEvents(ctx, "restore", p, vmprocessv1.EventKind_EVENT_KIND_STARTED, vmprocessv1.EventKind_EVENT_KIND_RESTORED,
		vmprocessv1.EventKind_EVENT_KIND_RESUMED, vmprocessv1.EventKind_EVENT_KIND_READY)
	if err != nil {
		return nil, err
	}
	if got := events[1].GetRestore(); got.GetSourceUrl() != h.url || got.GetMemoryRestoreMode() != memory {
		return nil, deviation("WatchEvents, restore of %s: RESTORED from %q with %s, want %q with %s", id, got.GetSourceUrl(), got.GetMemoryRestoreMode(), h.url, memory)
	}
	info, err := cp.vmInfo(ctx, id, vmprocessv1.VmState_VM_STATE_RUNNING)
	if err != nil {
		return nil, err
	}
	if err := expectVmConfig("GetVmInfo "+id+" (restored)", info, cp.cfg); err != nil {
		return nil, err
	}
	c, err := cp.readConsole(ctx, id, true, func(c console) bool { return len(c.ticks) > 0 })
	if err != nil {
		return nil, err
	}
	if c.booted {
		return nil, deviation("StreamLogs %s: the restored guest booted again, instead of carrying on", id)
	}
	if err := expectCounting("StreamLogs "+id, c.ticks, h.lastTick+1); err != nil {
		return nil, err
	}
	cp.log.Printf("restored %s from %s: pid %d, network namespace %s, GetVmInfo says %s with the snapshot's config; the guest carries on at tick %d (tick %d before the snapshot)",
		id, h.url, p.GetPid(), p.GetNetworkNamespace(), vmprocessv1.VmState_VM_STATE_RUNNING, c.ticks[0], h.lastTick)
	return p, nil
}
