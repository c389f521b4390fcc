package main

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	vmprocessv1 "github.com/vmprocd/vmprocd/gen/go/vmprocess/v1"
)

// fakeDaemon answers WatchExits with one scripted function per call, in order, and ListProcesses
// with a fixed listing; it records what each WatchExits asked for.
type fakeDaemon struct {
	vmprocessv1.UnimplementedVmProcessServiceServer
	calls   []func(grpc.ServerStreamingServer[vmprocessv1.ProcessExit]) error
	listing *vmprocessv1.ListProcessesResponse

	mu       sync.Mutex
	requests []*vmprocessv1.WatchExitsRequest
}

func (f *fakeDaemon) WatchExits(req *vmprocessv1.WatchExitsRequest, stream grpc.ServerStreamingServer[vmprocessv1.ProcessExit]) error {
	f.mu.Lock()
	n := len(f.requests)
	f.requests = append(f.requests, req)
	f.mu.Unlock()
	if n >= len(f.calls) {
		<-stream.Context().Done() // a live stream with nothing more to say
		return status.Error(codes.Canceled, "done")
	}
	return f.calls[n](stream)
}

func (f *fakeDaemon) ListProcesses(context.Context, *vmprocessv1.ListProcessesRequest) (*vmprocessv1.ListProcessesResponse, error) {
	if f.listing == nil {
		return nil, status.Error(codes.Unimplemented, "no listing scripted")
	}
	return f.listing, nil
}

func (f *fakeDaemon) cursors() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []uint64
	for _, r := range f.requests {
		out = append(out, r.GetAfterSequence())
	}
	return out
}

func send(exits ...*vmprocessv1.ProcessExit) func(grpc.ServerStreamingServer[vmprocessv1.ProcessExit]) error {
	return sendThen(nil, exits...)
}

func sendThen(end error, exits ...*vmprocessv1.ProcessExit) func(grpc.ServerStreamingServer[vmprocessv1.ProcessExit]) error {
	return func(stream grpc.ServerStreamingServer[vmprocessv1.ProcessExit]) error {
		for _, e := range exits {
			if err := stream.Send(e); err != nil {
				return err
			}
		}
		return end
	}
}

func exitOf(sandbox string, sequence uint64) *vmprocessv1.ProcessExit {
	return &vmprocessv1.ProcessExit{SandboxId: sandbox, Sequence: sequence, Pid: 100 + int32(sequence)}
}

// serve serves fake over an in-memory connection and returns a client of it; both end with the test.
func serve(t *testing.T, fake vmprocessv1.VmProcessServiceServer) vmprocessv1.VmProcessServiceClient {
	t.Helper()
	listener := bufconn.Listen(1 << 20)
	server := grpc.NewServer()
	vmprocessv1.RegisterVmProcessServiceServer(server, fake)
	go func() { _ = server.Serve(listener) }()
	conn, err := grpc.NewClient("passthrough:///fake",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return listener.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		server.Stop()
	})
	return vmprocessv1.NewVmProcessServiceClient(conn)
}

// runUntilCleanup runs a watcher's loop until the test ends (cleanups run last first: before serve's).
func runUntilCleanup(t *testing.T, run func(context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// watch starts a watcher for sandbox "a" after `cursor` against the fake.
func watch(t *testing.T, fake *fakeDaemon, cursor uint64) *exitWatcher {
	t.Helper()
	w := newExitWatcher(serve(t, fake), []string{"a"}, cursor, log.New(io.Discard, "", 0))
	w.minDelay, w.maxDelay = time.Millisecond, 10*time.Millisecond
	runUntilCleanup(t, w.run)
	return w
}

func waitSequence(t *testing.T, w *exitWatcher, sequence uint64) (*vmprocessv1.ProcessExit, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return w.waitFor(ctx, "an exit", func(e *vmprocessv1.ProcessExit) bool { return e.GetSequence() == sequence })
}

func TestReconnectsAfterTheLastSequenceReceived(t *testing.T) {
	fake := &fakeDaemon{calls: []func(grpc.ServerStreamingServer[vmprocessv1.ProcessExit]) error{
		sendThen(status.Error(codes.Unavailable, "daemon stopping"), exitOf("a", 6), exitOf("a", 7)),
		sendThen(status.Error(codes.ResourceExhausted, "fell behind"), exitOf("a", 8)),
		send(), // the stream ends (EOF): reconnect too
		send(exitOf("a", 9)),
	}}
	w := watch(t, fake, 5)
	if _, err := waitSequence(t, w, 9); err != nil {
		t.Fatal(err)
	}
	if got, want := fake.cursors()[:4], []uint64{5, 7, 8, 8}; !slices.Equal(got, want) {
		t.Errorf("after_sequence of each WatchExits: %v, want %v", got, want)
	}
	fake.mu.Lock()
	ids := fake.requests[0].GetSandboxIds()
	fake.mu.Unlock()
	if !slices.Equal(ids, []string{"a"}) {
		t.Errorf("sandbox_ids %v, want [a]", ids)
	}
	for _, sequence := range []uint64{6, 7, 8} {
		if _, err := waitSequence(t, w, sequence); err != nil {
			t.Errorf("exit #%d is not kept: %v", sequence, err)
		}
	}
}

func TestResyncsFromListProcessesAfterOutOfRange(t *testing.T) {
	fake := &fakeDaemon{
		calls: []func(grpc.ServerStreamingServer[vmprocessv1.ProcessExit]) error{
			sendThen(status.Error(codes.OutOfRange, "after_sequence 2 is older than the retained history")),
			send(exitOf("a", 31)),
		},
		listing: &vmprocessv1.ListProcessesResponse{
			ExitSequence: 30,
			Processes: []*vmprocessv1.ProcessInfo{
				{SandboxId: "a", State: vmprocessv1.ProcessState_PROCESS_STATE_EXITED, Exit: exitOf("a", 12)},
				{SandboxId: "other", State: vmprocessv1.ProcessState_PROCESS_STATE_EXITED, Exit: exitOf("other", 13)},
				{SandboxId: "a-live", State: vmprocessv1.ProcessState_PROCESS_STATE_RUNNING},
			},
		},
	}
	w := watch(t, fake, 2)
	if _, err := waitSequence(t, w, 31); err != nil {
		t.Fatal(err)
	}
	if exit, err := waitSequence(t, w, 12); err != nil || exit.GetSandboxId() != "a" {
		t.Errorf("the exit found in the listing: %v, %v", exit, err)
	}
	if got, want := fake.cursors()[:2], []uint64{2, 30}; !slices.Equal(got, want) {
		t.Errorf("after_sequence of each WatchExits: %v, want %v", got, want)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if slices.ContainsFunc(w.exits, func(e *vmprocessv1.ProcessExit) bool { return e.GetSandboxId() != "a" }) {
		t.Errorf("kept exits of sandboxes it does not watch: %v", w.exits)
	}
}

func TestASequenceThatDoesNotIncreaseIsADeviation(t *testing.T) {
	fake := &fakeDaemon{calls: []func(grpc.ServerStreamingServer[vmprocessv1.ProcessExit]) error{
		send(exitOf("a", 6), exitOf("a", 6)),
	}}
	w := watch(t, fake, 5)
	_, err := waitSequence(t, w, 7)
	if !errors.Is(err, errDeviation) {
		t.Fatalf("got %v, want a deviation", err)
	}
}

func TestAFailureItCannotRideOutEndsTheWatchWithItsCode(t *testing.T) {
	fake := &fakeDaemon{calls: []func(grpc.ServerStreamingServer[vmprocessv1.ProcessExit]) error{
		sendThen(status.Error(codes.PermissionDenied, "not yours")),
	}}
	w := watch(t, fake, 0)
	_, err := waitSequence(t, w, 1)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("got %v (code %v), want PERMISSION_DENIED", err, status.Code(err))
	}
	var call *callError
	if !errors.As(err, &call) || call.call != "WatchExits" {
		t.Fatalf("got %v, want the failure of WatchExits", err)
	}
}
