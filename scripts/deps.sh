#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian packages cilium-rs needs to build, test, bench and run the demo, on a
# fresh Debian 12 machine with nothing assumed from an earlier install. Idempotent: packages
# already installed are not touched, and apt is not called at all when nothing is missing.
# After the install, each package's probe (a command it provides, or a file the build
# includes) is checked, so a package that is there but incomplete is named.
#
# `cargo xtask fresh-check` proves this list complete: it runs this script in a minimal
# Debian root made by debootstrap and builds everything there (README, "Fresh machines").
set -euo pipefail

# package            probe                                          who needs it
REQS=(
  "build-essential    cc                                             the cc crates and libFuzzer (g++) in the fuzz targets"
  "ca-certificates    /etc/ssl/certs/ca-certificates.crt             cargo and curl over https"
  "git                git                                            cargo xtask fresh-check (copies the tracked files)"
  "curl               curl                                           tests and the demo: HTTP from inside pods"
  "clang-19           clang-19                                       cilium-bpf's build script (the BPF programs)"
  "libbpf-dev         /usr/include/bpf/bpf_helpers.h                 the BPF programs' helper headers"
  "iproute2           ip                                             namespaces, veths, routes in tests and the lab"
  "iputils-ping       ping                                           datapath tests"
  "netcat-openbsd     nc.openbsd                                     Kubernetes' e2e Services tests (nc in exec pods, as agnhost's image has it)"
  "wget               wget                                           Kubernetes' e2e Services tests (wget in host-network exec pods, as agnhost's image has it)"
  "iperf3             iperf3                                         datapath tests (TCP streams through the datapath)"
  "python3            python3                                        test servers inside namespaces"
  "python3-venv       /usr/share/doc/python3-venv                    cargo xtask test: the schemathesis venv (target/schemathesis-venv)"
  "procps             sysctl                                         sysctls and kill inside test namespaces"
  "iptables           iptables-nft-restore                           the kube_proxy bench's baseline and upstream kube-proxy's test (their own namespaces only)"
  "nftables           nft                                            the kube_proxy bench's nft baseline"
  "protobuf-compiler  protoc                                         etcd-client's and cilium-hubble's build scripts"
  "libprotobuf-dev    /usr/include/google/protobuf/descriptor.proto  the well-known .proto files protoc imports"
  "containernetworking-plugins /usr/lib/cni/bridge                   the reference CNI plugins (bridge, host-local, portmap) of the pre-Cilium network"
  "etcd-server        etcd                                           the cluster store in tests and the lab"
  "etcd-client        etcdctl                                        tests that inspect etcd"
  "chromium           chromium                                       the Hubble UI tests (headless)"
  "fonts-dejavu-core  /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf the Hubble UI tests (text in screenshots)"
  "debootstrap        debootstrap                                    cargo xtask fresh-check"
)

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

present() {
  case "$1" in
    /*) [ -e "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

missing=()
for r in "${REQS[@]}"; do
  read -r pkg _ <<<"$r"
  installed "$pkg" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

bad=0
for r in "${REQS[@]}"; do
  read -r pkg probe why <<<"$r"
  if ! present "$probe"; then
    echo "deps: $probe (from $pkg: $why) is missing after the install" >&2
    bad=1
  fi
done
((bad == 0)) || exit 1

# The toolchains are not Debian's (too old there): Rust from rustup, Go from go.dev. Go builds
# the upstream Kubernetes control plane and kubectl (k8s/controlplane, `cargo xtask
# kube-build`); its modules come from the Go module proxy, pinned by go.sum.
if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo not found; install Rust 1.95 or newer (https://rustup.rs)" >&2
  exit 1
fi
if ! command -v go >/dev/null 2>&1; then
  echo "deps: go not found; install Go 1.26 or newer (https://go.dev/dl), for k8s/controlplane" >&2
  exit 1
fi
gov=$(go env GOVERSION)
IFS=. read -r gomaj gomin _ <<<"${gov#go}"
if ((gomaj < 1 || (gomaj == 1 && ${gomin%%[!0-9]*} < 26))); then
  echo "deps: $gov is too old; k8s/controlplane needs Go 1.26 or newer (https://go.dev/dl)" >&2
  exit 1
fi
