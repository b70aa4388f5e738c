// SPDX-License-Identifier: Apache-2.0

// Command kube is the upstream Kubernetes control plane and kubectl, linked into one
// multi-call binary from the k8s.io/kubernetes module (as k3s links them): the program
// runs as the command its name says (kube-apiserver, kube-controller-manager,
// kube-scheduler, kube-proxy, kubectl), or as the one its first argument names (`kube
// kubectl get pods`). `cargo xtask kube-build` builds it into target/kube/ with a link per
// command. Nothing here changes upstream's behaviour: each command is upstream's own cobra
// command.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectl "k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

var commands = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kube-proxy":              proxy.NewProxyCommand,
	"kubectl":                 kubectl.NewDefaultKubectlCommand,
}

func main() {
	name := filepath.Base(os.Args[0])
	if _, ok := commands[name]; !ok && name != "etcd" && len(os.Args) > 1 {
		name = os.Args[1]
		os.Args = os.Args[1:]
	}
	if name == "etcd" {
		// etcd's own main (it reads os.Args and exits by itself).
		etcdmain.Main(os.Args)
		return
	}
	make, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "usage: kube {kube-apiserver|kube-controller-manager|kube-scheduler|kube-proxy|kubectl|etcd} [ARGS...], or a link of that name\n")
		os.Exit(64)
	}
	os.Exit(cli.Run(make()))
}
