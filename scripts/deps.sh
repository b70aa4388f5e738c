#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian packages cilium-rs needs to build and test. Idempotent: packages
# already present are not touched, and apt is not called at all when nothing is missing.
#
# build-essential (gcc/g++: libFuzzer for the fuzz targets), pkg-config, ca-certificates,
# git, curl; clang-19, llvm-19, libbpf-dev, bpftool (the BPF datapath); iproute2,
# iputils-ping, iperf3, python3 (privileged datapath tests); iptables, nftables (the
# kube-proxy emulation the benchmarks compare against); protobuf-compiler (etcd-client's
# build script), etcd-server and etcd-client (the cluster store: tests start their own etcd
# on 127.0.0.1 or inside lab namespaces; the package's service is never started); chromium and
# fonts-dejavu-core (the Hubble UI tests render the page headless). Rust 1.95
# comes from rustup.
set -euo pipefail

PKGS=(build-essential pkg-config ca-certificates git curl clang-19 llvm-19 libbpf-dev bpftool iproute2 iputils-ping iperf3 python3 iptables nftables protobuf-compiler etcd-server etcd-client chromium fonts-dejavu-core)

missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo not found; install Rust 1.95 or newer (https://rustup.rs)" >&2
  exit 1
fi
