package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	vmprocessv1 "github.com/vmprocd/vmprocd/gen/go/vmprocess/v1"
)

// exitWatcher follows WatchExits for some sandboxes from a cursor (a ListProcesses exit_sequence)
// and keeps every exit it receives, so that a step can wait for an exit that arrived before it
// asked. When the stream breaks (the daemon restarts or shuts down, or this watcher fell behind)
// it reconnects after the last sequence received: no gap, no duplicate. When the daemon no longer
// retains exits that far back (OUT_OF_RANGE), it resyncs from ListProcesses, as the API says.
type exitWatcher struct {
	client     vmprocessv1.VmProcessServiceClient
	sandboxIDs []string
	log        *log.Logger
	// Reconnection delays: from minDelay, doubling up to maxDelay, with jitter.
	minDelay, maxDelay time.Duration

	mu      sync.Mutex
	cursor  uint64
	exits   []*vmprocessv1.ProcessExit
	err     error         // why the watcher stopped for good
	changed chan struct{} // closed, and replaced, whenever exits or err change
}

func newExitWatcher(client vmprocessv1.VmProcessServiceClient, sandboxIDs []string, cursor uint64, logger *log.Logger) *exitWatcher {
	return &exitWatcher{
		client: client, sandboxIDs: sandboxIDs, log: logger, cursor: cursor,
		minDelay: 100 * time.Millisecond, maxDelay: 5 * time.Second, changed: make(chan struct{}),
	}
}

// run watches until ctx is done, or until a failure it cannot ride out, which waitFor then returns.
func (w *exitWatcher) run(ctx context.Context) {
	delay := w.minDelay
	for {
		received, err := w.follow(ctx)
		if ctx.Err() != nil {
			w.stop(ctx.Err())
			return
		}
		if received > 0 {
			delay = w.minDelay
		}
		switch code := status.Code(err); {
		case errors.Is(err, errDeviation):
			w.stop(err)
			return
		case code == codes.OutOfRange:
			w.log.Printf("exit watch: %v; resyncing from ListProcesses", err)
			if err := w.resync(ctx); err != nil {
				w.stop(err)
				return
			}
			continue
		case code == codes.Unavailable, code == codes.ResourceExhausted, errors.Is(err, io.EOF):
			// The daemon is going away (or went), or dropped this watcher for lagging: come back.
			// A stream never ends by itself while the daemon runs, so an end (EOF) is one of these.
		default:
			w.stop(failed("WatchExits", err))
			return
		}
		wait := delay/2 + rand.N(delay/2+1)
		w.log.Printf("exit watch: stream ended (%v); reconnecting after sequence %d in %v", err, w.cursorNow(), wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			w.stop(ctx.Err())
			return
		case <-time.After(wait):
		}
		delay = min(2*delay, w.maxDelay)
	}
}

// follow is one WatchExits call, from the cursor, until the stream breaks; it returns how many
// exits it received.
func (w *exitWatcher) follow(ctx context.Context) (int, error) {
	request := &vmprocessv1.WatchExitsRequest{SandboxIds: w.sandboxIDs, AfterSequence: proto.Uint64(w.cursorNow())}
	// WaitForReady: while the daemon restarts, wait for it instead of failing at once.
	stream, err := w.client.WatchExits(ctx, request, grpc.WaitForReady(true))
	if err != nil {
		return 0, err
	}
	for received := 0; ; received++ {
		exit, err := stream.Recv()
		if err != nil {
			return received, err
		}
		if err := w.received(exit); err != nil {
			return received, err
		}
	}
}

// received records an exit from the stream: sequences must increase strictly past the cursor.
func (w *exitWatcher) received(exit *vmprocessv1.ProcessExit) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if exit.GetSequence() <= w.cursor {
		return deviation("WatchExits sent sequence %d after %d: sequences must increase strictly", exit.GetSequence(), w.cursor)
	}
	if len(w.sandboxIDs) > 0 && !slices.Contains(w.sandboxIDs, exit.GetSandboxId()) {
		return deviation("WatchExits sent an exit of sandbox %q, which was not asked for", exit.GetSandboxId())
	}
	w.cursor = exit.GetSequence()
	w.addLocked(exit)
	return nil
}

// resync lists the processes, keeps the exits of the watched ones that were missed, and moves the
// cursor to the listing's exit_sequence, from which the next WatchExits continues with no gap.
func (w *exitWatcher) resync(ctx context.Context) error {
	var cursor uint64
	var missed []*vmprocessv1.ProcessExit
	token := ""
	for first := true; first || token != ""; first = false {
		callCtx, cancel := context.WithTimeout(ctx, callTimeout)
		page, err := w.client.ListProcesses(callCtx, &vmprocessv1.ListProcessesRequest{PageToken: token})
		cancel()
		if err != nil {
			return failed("ListProcesses (resync)", err)
		}
		cursor, token = page.GetExitSequence(), page.GetNextPageToken()
		for _, p := range page.GetProcesses() {
			if p.GetExit() != nil && (len(w.sandboxIDs) == 0 || slices.Contains(w.sandboxIDs, p.GetSandboxId())) {
				missed = append(missed, p.GetExit())
			}
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, exit := range missed {
		if !slices.ContainsFunc(w.exits, func(e *vmprocessv1.ProcessExit) bool { return e.GetSequence() == exit.GetSequence() }) {
			w.addLocked(exit)
		}
	}
	w.cursor = cursor
	return nil
}

func (w *exitWatcher) addLocked(exit *vmprocessv1.ProcessExit) {
	w.exits = append(w.exits, exit)
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *exitWatcher) stop(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
		close(w.changed)
		w.changed = make(chan struct{})
	}
}

func (w *exitWatcher) cursorNow() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cursor
}

// waitFor returns the first exit received that matches, waiting for it until ctx is done.
func (w *exitWatcher) waitFor(ctx context.Context, what string, match func(*vmprocessv1.ProcessExit) bool) (*vmprocessv1.ProcessExit, error) {
	for {
		w.mu.Lock()
		var found *vmprocessv1.ProcessExit
		if i := slices.IndexFunc(w.exits, match); i >= 0 {
			found = w.exits[i]
		}
		err, changed := w.err, w.changed
		w.mu.Unlock()
		if found != nil {
			return found, nil
		}
		if err != nil {
			return nil, fmt.Errorf("waiting for %s: the exit watch stopped: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %s on WatchExits: %w", what, ctx.Err())
		case <-changed:
		}
	}
}
