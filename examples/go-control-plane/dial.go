package main

import (
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// target turns -address into a gRPC target: a bare socket path becomes unix://PATH; unix:///PATH
// and host:port are gRPC targets already.
func target(address string) string {
	if strings.HasPrefix(address, "/") {
		return "unix://" + address
	}
	return address
}

// dial makes the client connection. It connects lazily: an unreachable daemon shows as
// UNAVAILABLE on the first call. Plaintext: the daemon's unix sockets are root's (0600), and
// it allows plaintext TCP on loopback only.
func dial(address string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(target(address), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", address, err)
	}
	return conn, nil
}
