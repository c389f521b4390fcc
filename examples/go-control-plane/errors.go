package main

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errDeviation marks an answer that is not what the API promises: the run stops there.
var errDeviation = errors.New("unexpected answer")

func deviation(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errDeviation, fmt.Sprintf(format, args...))
}

// callError is a failed call: which call, and the daemon's status, kept as the cause so that
// status.Code and errors.As see it through any wrapping.
type callError struct {
	call string
	err  error
}

func (e *callError) Error() string {
	st, ok := status.FromError(e.err)
	if !ok {
		return fmt.Sprintf("%s: %v", e.call, e.err)
	}
	msg := fmt.Sprintf("%s: %s: %s", e.call, codeName[st.Code()], st.Message())
	if hint := hints[st.Code()]; hint != "" {
		msg += " (" + hint + ")"
	}
	return msg
}

func (e *callError) Unwrap() error { return e.err }

// failed wraps the error of `call`; nil stays nil.
func failed(call string, err error) error {
	if err == nil {
		return nil
	}
	return &callError{call: call, err: err}
}

// codeName spells codes as the proto's comments and the daemon's other clients do.
var codeName = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN", codes.InvalidArgument: "INVALID_ARGUMENT",
	codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED", codes.OutOfRange: "OUT_OF_RANGE",
	codes.Unimplemented: "UNIMPLEMENTED", codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE",
	codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
}

// hints say what to do about the codes a caller of this program can act on; the daemon's message
// says the rest.
var hints = map[codes.Code]string{
	codes.AlreadyExists:    "a VM of that sandbox is live, perhaps from an earlier run: stop it, or pass another -sandbox",
	codes.PermissionDenied: "-snapshots must be under one of the daemon's image roots (--image-root)",
	codes.DeadlineExceeded: "the call did not finish within its deadline",
	codes.Unimplemented:    "the daemon is older than this program: it has no such call",
}
