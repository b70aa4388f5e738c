// SPDX-License-Identifier: Apache-2.0

//! Prints the kernel preflight report: version, configuration, mounts, real probes, and
//! the seed's table of advanced features with what this machine offers.
//!
//! `cargo run -p cilium-examples --example preflight [-- -o json]` (run as root for the
//! probes). Exits 1 when the datapath cannot run here.

use std::process::ExitCode;

use cilium_bpf::preflight::Preflight;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = match args.as_slice() {
        [] => false,
        [o, fmt] if (o == "-o" || o == "--output") && fmt == "json" => true,
        _ => {
            eprintln!("usage: preflight [-o json]");
            return ExitCode::from(2);
        }
    };
    let report = Preflight::run();
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{report}");
    }
    if report.datapath_ready() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
