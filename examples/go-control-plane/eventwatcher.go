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

// eventWatcher follows WatchEvents for some sandboxes from a cursor (GetLatestSequence's
// latest_event_sequence) and keeps their events, in order, for the steps to take. Its cursor is
// the last sequence received, PROGRESS markers included: resuming after a marker skips only events
// the filter would have dropped. When the stream breaks it reconnects after the cursor, with
// backoff. OUT_OF_RANGE means events it should have seen are gone: no resync can give them back
// (ListProcesses lists states, not events), so the watch ends and the run fails, saying so.
type eventWatcher struct {
	client     vmprocessv1.VmProcessServiceClient
	sandboxIDs []string
	log        *log.Logger
	// Reconnection delays: from minDelay, doubling up to maxDelay, with jitter.
	minDelay, maxDelay time.Duration

	mu      sync.Mutex
	cursor  uint64
	events  map[string][]*vmprocessv1.ProcessEvent // by sandbox, received and not yet taken
	err     error                                  // why the watcher stopped for good
	changed chan struct{}                          // closed, and replaced, whenever events or err change
}

func newEventWatcher(client vmprocessv1.VmProcessServiceClient, sandboxIDs []string, cursor uint64, logger *log.Logger) *eventWatcher {
	return &eventWatcher{
		client: client, sandboxIDs: sandboxIDs, log: logger, cursor: cursor,
		minDelay: 100 * time.Millisecond, maxDelay: 5 * time.Second,
		events: map[string][]*vmprocessv1.ProcessEvent{}, changed: make(chan struct{}),
	}
}

// run watches until ctx is done, or until a failure it cannot ride out, which take then returns.
func (w *eventWatcher) run(ctx context.Context) {
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
			w.stop(fmt.Errorf("events after sequence %d are no longer retained, so this run cannot check them "+
				"(the daemon keeps --event-history events): %w", w.cursorNow(), failed("WatchEvents", err)))
			return
		case code == codes.Unavailable, code == codes.ResourceExhausted, errors.Is(err, io.EOF):
			// The daemon is going away (or went), or dropped this watcher for lagging: come back.
			// A stream never ends by itself while the daemon runs, so an end (EOF) is one of these.
		default:
			w.stop(failed("WatchEvents", err))
			return
		}
		wait := delay/2 + rand.N(delay/2+1)
		w.log.Printf("event watch: stream ended (%v); reconnecting after sequence %d in %v", err, w.cursorNow(), wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			w.stop(ctx.Err())
			return
		case <-time.After(wait):
		}
		delay = min(2*delay, w.maxDelay)
	}
}

// follow is one WatchEvents call, after the cursor, until the stream breaks; it returns how many
// events and markers it received.
func (w *eventWatcher) follow(ctx context.Context) (int, error) {
	request := &vmprocessv1.WatchEventsRequest{SandboxIds: w.sandboxIDs, AfterSequence: proto.Uint64(w.cursorNow())}
	// WaitForReady: while the daemon restarts, wait for it instead of failing at once.
	stream, err := w.client.WatchEvents(ctx, request, grpc.WaitForReady(true))
	if err != nil {
		return 0, err
	}
	for received := 0; ; received++ {
		event, err := stream.Recv()
		if err != nil {
			return received, err
		}
		if err := w.received(event); err != nil {
			return received, err
		}
	}
}

// received records an event or a PROGRESS marker: sequences must increase strictly past the
// cursor, and events be of the sandboxes asked for. A marker only moves the cursor.
func (w *eventWatcher) received(event *vmprocessv1.ProcessEvent) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if event.GetSequence() <= w.cursor {
		return deviation("WatchEvents sent sequence %d after %d: sequences must increase strictly", event.GetSequence(), w.cursor)
	}
	w.cursor = event.GetSequence()
	if event.GetKind() == vmprocessv1.EventKind_EVENT_KIND_PROGRESS {
		return nil
	}
	id := event.GetSandboxId()
	if !slices.Contains(w.sandboxIDs, id) {
		return deviation("WatchEvents sent event #%d (%s) of sandbox %q, which was not asked for", event.GetSequence(), event.GetKind(), id)
	}
	w.events[id] = append(w.events[id], event)
	close(w.changed)
	w.changed = make(chan struct{})
	return nil
}

func (w *eventWatcher) stop(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
		close(w.changed)
		w.changed = make(chan struct{})
	}
}

func (w *eventWatcher) cursorNow() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cursor
}

// take returns the next n events of a sandbox, in the order they came, once they have all come
// (waiting until ctx is done); what a step takes, the next step does not see again.
func (w *eventWatcher) take(ctx context.Context, sandboxID string, n int) ([]*vmprocessv1.ProcessEvent, error) {
	for {
		w.mu.Lock()
		var taken []*vmprocessv1.ProcessEvent
		if pending := w.events[sandboxID]; len(pending) >= n {
			taken, w.events[sandboxID] = pending[:n:n], pending[n:]
		}
		got, err, changed := len(w.events[sandboxID]), w.err, w.changed
		w.mu.Unlock()
		if taken != nil {
			return taken, nil
		}
		if err != nil {
			return nil, fmt.Errorf("waiting for %d events of %s: the event watch stopped: %w", n, sandboxID, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %d events of %s on WatchEvents (%d came): %w", n, sandboxID, got, ctx.Err())
		case <-changed:
		}
	}
}
