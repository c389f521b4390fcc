package main

import (
	"context"
	"errors"
	"io"
	"log"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vmprocessv1 "github.com/vmprocd/vmprocd/gen/go/vmprocess/v1"
)

type eventStream = grpc.ServerStreamingServer[vmprocessv1.ProcessEvent]

// fakeEvents answers WatchEvents with one scripted function per call, in order, and records what
// each call asked for.
type fakeEvents struct {
	vmprocessv1.UnimplementedVmProcessServiceServer
	calls []func(eventStream) error

	mu       sync.Mutex
	requests []*vmprocessv1.WatchEventsRequest
}

func (f *fakeEvents) WatchEvents(req *vmprocessv1.WatchEventsRequest, stream eventStream) error {
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

func (f *fakeEvents) cursors() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []uint64
	for _, r := range f.requests {
		out = append(out, r.GetAfterSequence())
	}
	return out
}

func sendEvents(end error, events ...*vmprocessv1.ProcessEvent) func(eventStream) error {
	return func(stream eventStream) error {
		for _, e := range events {
			if err := stream.Send(e); err != nil {
				return err
			}
		}
		return end
	}
}

func event(sandbox string, sequence uint64, kind vmprocessv1.EventKind) *vmprocessv1.ProcessEvent {
	return &vmprocessv1.ProcessEvent{SandboxId: sandbox, Sequence: sequence, Kind: kind, Origin: vmprocessv1.EventOrigin_EVENT_ORIGIN_DAEMON}
}

// marker is a PROGRESS marker: only its sequence is set.
func marker(sequence uint64) *vmprocessv1.ProcessEvent {
	return &vmprocessv1.ProcessEvent{Sequence: sequence, Kind: vmprocessv1.EventKind_EVENT_KIND_PROGRESS}
}

// watchEvents starts an event watcher for sandbox "a" after `cursor` against the fake.
func watchEvents(t *testing.T, fake *fakeEvents, cursor uint64) *eventWatcher {
	t.Helper()
	w := newEventWatcher(serve(t, fake), []string{"a"}, cursor, log.New(io.Discard, "", 0))
	w.minDelay, w.maxDelay = time.Millisecond, 10*time.Millisecond
	runUntilCleanup(t, w.run)
	return w
}

func take(t *testing.T, w *eventWatcher, n int) ([]*vmprocessv1.ProcessEvent, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return w.take(ctx, "a", n)
}

func sequences(events []*vmprocessv1.ProcessEvent) []uint64 {
	var out []uint64
	for _, e := range events {
		out = append(out, e.GetSequence())
	}
	return out
}

func TestEventWatchReconnectsAfterTheLastSequenceReceivedMarkersIncluded(t *testing.T) {
	fake := &fakeEvents{calls: []func(eventStream) error{
		sendEvents(status.Error(codes.Unavailable, "daemon stopping"), event("a", 6, vmprocessv1.EventKind_EVENT_KIND_STARTED), marker(9)),
		sendEvents(nil, marker(12)), // the stream ends (EOF): reconnect too
		sendEvents(status.Error(codes.ResourceExhausted, "fell behind"), event("a", 13, vmprocessv1.EventKind_EVENT_KIND_READY)),
		sendEvents(nil, event("a", 14, vmprocessv1.EventKind_EVENT_KIND_EXITED)),
	}}
	w := watchEvents(t, fake, 5)
	first, err := take(t, w, 1)
	if err != nil {
		t.Fatal(err)
	}
	rest, err := take(t, w, 2)
	if err != nil {
		t.Fatal(err)
	}
	// Markers move the cursor and are not events; each event is taken once, in order.
	if got := [][]uint64{sequences(first), sequences(rest)}; !slices.Equal(got[0], []uint64{6}) || !slices.Equal(got[1], []uint64{13, 14}) {
		t.Errorf("taken %v, want [[6] [13 14]]", got)
	}
	if got, want := fake.cursors()[:4], []uint64{5, 9, 12, 13}; !slices.Equal(got, want) {
		t.Errorf("after_sequence of each WatchEvents: %v, want %v", got, want)
	}
	fake.mu.Lock()
	ids := fake.requests[0].GetSandboxIds()
	fake.mu.Unlock()
	if !slices.Equal(ids, []string{"a"}) {
		t.Errorf("sandbox_ids %v, want [a]", ids)
	}
}

func TestEventWatchOutOfRangeEndsTheWatchSayingWhy(t *testing.T) {
	fake := &fakeEvents{calls: []func(eventStream) error{
		sendEvents(status.Error(codes.OutOfRange, "after_sequence 7 is before an event this watcher would have received that is no longer retained"), marker(7)),
		sendEvents(nil, event("a", 8, vmprocessv1.EventKind_EVENT_KIND_STARTED)),
	}}
	w := watchEvents(t, fake, 5)
	_, err := take(t, w, 1)
	if status.Code(err) != codes.OutOfRange {
		t.Fatalf("got %v (code %v), want OUT_OF_RANGE", err, status.Code(err))
	}
	for _, want := range []string{"events after sequence 7 are no longer retained", "WatchEvents: OUT_OF_RANGE: "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
	if got := fake.cursors(); !slices.Equal(got, []uint64{5}) {
		t.Errorf("after_sequence of each WatchEvents: %v, want only [5]: no reconnect past a gap", got)
	}
}

func TestEventWatchDeviations(t *testing.T) {
	for name, events := range map[string][]*vmprocessv1.ProcessEvent{
		"a marker that does not increase": {event("a", 6, vmprocessv1.EventKind_EVENT_KIND_STARTED), marker(6)},
		"an event of another sandbox":     {event("b", 6, vmprocessv1.EventKind_EVENT_KIND_STARTED)},
	} {
		t.Run(name, func(t *testing.T) {
			w := watchEvents(t, &fakeEvents{calls: []func(eventStream) error{sendEvents(nil, events...)}}, 5)
			if _, err := take(t, w, 2); !errors.Is(err, errDeviation) {
				t.Fatalf("got %v, want a deviation", err)
			}
		})
	}
}

func TestEventWatchAFailureItCannotRideOutEndsTheWatchWithItsCode(t *testing.T) {
	w := watchEvents(t, &fakeEvents{calls: []func(eventStream) error{sendEvents(status.Error(codes.InvalidArgument, "unknown kind"))}}, 0)
	_, err := take(t, w, 1)
	var call *callError
	if status.Code(err) != codes.InvalidArgument || !errors.As(err, &call) || call.call != "WatchEvents" {
		t.Fatalf("got %v (code %v), want the INVALID_ARGUMENT of WatchEvents", err, status.Code(err))
	}
}
