// SPDX-License-Identifier: Apache-2.0

//! Compiles the Observer API (proto/) with protoc (Debian: protobuf-compiler).

fn main() {
    println!("cargo:rerun-if-changed=proto");
    if let Err(e) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(
            &[
                "proto/flow/flow.proto",
                "proto/relay/relay.proto",
                "proto/observer/observer.proto",
            ],
            &["proto"],
        )
    {
        panic!(
            "compiling the Hubble protos (is protoc installed? apt-get install protobuf-compiler): {e}"
        );
    }
}
