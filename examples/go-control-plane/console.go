package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"regexp"
	"strconv"

	vmprocessv1 "github.com/vmprocd/vmprocd/gen/go/vmprocess/v1"
)

// The tiny guest (native/tiny-guest) prints a boot line, then `tiny-guest: tick N` counting up
// from 1 with its counter in guest memory, so that a restored guest carries on where the
// snapshot left it. Its serial console goes to the VMM's log (VmConfig.serial LOG, the default),
// which StreamLogs reads.
var (
	bootLine = regexp.MustCompile(`^tiny-guest: boot `)
	tickLine = regexp.MustCompile(`^tiny-guest: tick (\d+)$`)
)

// console is what a sandbox's guest printed: whether it booted, and its ticks in order.
type console struct {
	booted bool
	ticks  []int
}

func (c *console) line(text []byte) {
	if bootLine.Match(text) {
		c.booted = true
	} else if m := tickLine.FindSubmatch(text); m != nil {
		n, _ := strconv.Atoi(string(m[1])) // \d+ of a line: only an absurd length fails
		c.ticks = append(c.ticks, n)
	}
}

// readConsole reads the guest's console from the start of the sandbox's log: what is there, or
// with follow, what comes until enough says it has seen enough (the log ends when the VMM exits).
func (cp *controlPlane) readConsole(ctx context.Context, id string, follow bool, enough func(console) bool) (console, error) {
	call := "StreamLogs " + id
	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	stream, err := cp.client.StreamLogs(callCtx, &vmprocessv1.StreamLogsRequest{SandboxId: id, Follow: follow})
	if err != nil {
		return console{}, failed(call, err)
	}
	var c console
	var pending []byte // a line not yet ended: chunks are not aligned with lines
	for enough == nil || !enough(c) {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if follow {
				return c, deviation("%s: the log ended (the VMM exited) before the guest printed what was awaited; it printed %d ticks", call, len(c.ticks))
			}
			return c, nil
		}
		if err != nil && follow && callCtx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
			return c, deviation("%s: the guest printed %d ticks in %v, not what was awaited: is -kernel the tiny guest?", call, len(c.ticks), callTimeout)
		}
		if err != nil {
			return c, failed(call, err)
		}
		pending = append(pending, chunk.GetData()...)
		for {
			end := bytes.IndexByte(pending, '\n')
			if end < 0 {
				break
			}
			c.line(pending[:end])
			pending = pending[end+1:]
		}
	}
	return c, nil
}

// expectCounting checks that the ticks count up by one from first: the guest's counter is never
// lost or repeated, across a pause and a snapshot.
func expectCounting(call string, ticks []int, first int) error {
	for i, n := range ticks {
		if n != first+i {
			return deviation("%s: the guest's console has ticks %v, want them counting up from %d", call, ticks, first)
		}
	}
	return nil
}
