// SPDX-License-Identifier: Apache-2.0

//! A command-line contract for Maglev tables, for tools that check compatibility with
//! Cilium: reads a JSON description of a service's backends and prints its lookup table.
//!
//! ```sh
//! cargo run --release -p cilium-examples --example maglev -- --input FILE   # FILE `-` = stdin
//! ```
//!
//! Input: `{"seed": "JLfvgnHc2kaSUFaI", "table_size": 251,
//!          "backends": [{"hash": "[10.0.0.1:80/TCP,State:active]", "weight": 100, "id": 1}]}`
//! (every field required; weights 0-65535). Output: `{"table": [1, ...]}` with `table_size`
//! ids. Invalid input (bad JSON, bad seed, a size Cilium does not accept, a duplicate hash,
//! no backends) prints `error: ...` on stderr and exits with status 1; bad arguments exit 2.

use std::io::Read;
use std::process::ExitCode;

fn run(path: &str) -> Result<String, String> {
    let mut text = String::new();
    if path == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading stdin: {e}"))?;
    } else {
        text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    }
    cilium_examples::maglev_json(&text)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [flag, path] if flag == "--input" => path.clone(),
        _ => {
            eprintln!("usage: maglev --input FILE   (FILE - reads stdin)");
            return ExitCode::from(2);
        }
    };
    match run(&path) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
