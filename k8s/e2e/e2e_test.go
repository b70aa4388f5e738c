// SPDX-License-Identifier: Apache-2.0

// Package e2e builds Kubernetes' own end-to-end tests of sig-network (the NetworkPolicy
// suite `[sig-network] Netpol` and the Services tests among them) into one test binary,
// from the k8s.io/kubernetes module pinned in go.mod: `cargo xtask conformance` compiles
// it with `go test -c` into target/kube/e2e.test and runs it against the lab. Nothing of
// upstream's tests is changed: this file only registers the framework's flags, as
// upstream's test/e2e/e2e_test.go does, and links sig-network's specs.
package e2e

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"k8s.io/kubernetes/test/e2e"
	"k8s.io/kubernetes/test/e2e/framework"
	"k8s.io/kubernetes/test/e2e/framework/config"
	"k8s.io/kubernetes/test/e2e/framework/testfiles"
	manifests "k8s.io/kubernetes/test/e2e/testing-manifests"

	// The specs: sig-network (it links the NetworkPolicy suite, netpol).
	_ "k8s.io/kubernetes/test/e2e/network"

	// The framework's debug and node helpers, as upstream's suite wires them.
	_ "k8s.io/kubernetes/test/e2e/framework/debug/init"
	_ "k8s.io/kubernetes/test/e2e/framework/node/init"
)

func TestMain(m *testing.M) {
	config.CopyFlags(config.Flags, flag.CommandLine)
	framework.RegisterCommonFlags(flag.CommandLine)
	framework.RegisterClusterFlags(flag.CommandLine)
	flag.Parse()
	if flag.CommandLine.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "unexpected arguments: %v\n", flag.CommandLine.Args())
		os.Exit(2)
	}
	testfiles.AddFileSource(manifests.GetE2ETestingManifestsFS())
	framework.AfterReadingAllFlags(&framework.TestContext)
	os.Exit(m.Run())
}

// TestE2E runs the linked specs that the ginkgo flags select.
func TestE2E(t *testing.T) {
	e2e.RunE2ETests(t)
}
