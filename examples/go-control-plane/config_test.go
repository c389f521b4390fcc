package main

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

var required = []string{"-kernel", "/k", "-rootfs", "/r", "-netns", "a", "-restore-netns", "b", "-snapshots", "/s"}

func TestFlags(t *testing.T) {
	cfg, err := parseFlags(append([]string{"-address", "127.0.0.1:50051", "-sandbox", "sb"}, required...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.address != "127.0.0.1:50051" || cfg.restoredSandbox() != "sb-restored" || cfg.tap != "tap0" || cfg.vcpus != 1 || cfg.memoryMiB != 64 {
		t.Errorf("parsed %+v", cfg)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{required[2:], "-kernel is required"},
		{append(slices.Clone(required), "-restore-netns", "a"), "-restore-netns must differ"},
		{append([]string{"-vcpus", "0"}, required...), "-vcpus 0"},
		{append(slices.Clone(required), "extra"), `unexpected argument "extra"`},
		{[]string{"-nope"}, "flag provided but not defined"},
	} {
		_, err := parseFlags(tc.args, io.Discard)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want a usage error with %q", tc.args, err, tc.want)
		}
	}
}

func TestTarget(t *testing.T) {
	for address, want := range map[string]string{
		"/run/vmprocd/vmprocd.sock":        "unix:///run/vmprocd/vmprocd.sock",
		"unix:///run/vmprocd/vmprocd.sock": "unix:///run/vmprocd/vmprocd.sock",
		"127.0.0.1:50051":                  "127.0.0.1:50051",
	} {
		if got := target(address); got != want {
			t.Errorf("target(%q) = %q, want %q", address, got, want)
		}
	}
}
