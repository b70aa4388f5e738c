// SPDX-License-Identifier: Apache-2.0

//! Fuzzing with libFuzzer on the stable toolchain, and the replay of the kept corpus.
//!
//! cargo-fuzz asks for nightly only for `-Zsanitizer=address`; the coverage instrumentation
//! libFuzzer feeds on is LLVM's SanitizerCoverage, which stable rustc enables through
//! `-Cpasses=sancov-module` and its `-Cllvm-args`. So `cargo xtask fuzz` builds the targets
//! of `fuzz/` with those flags (what cargo-fuzz passes, minus the sanitizer: a Rust parser's
//! bugs show as panics, which libFuzzer reports as crashes either way) and runs each binary.
//! `--target x86_64-unknown-linux-gnu` is explicit so that build scripts and proc macros,
//! which run on the host, are built without the flags.
//!
//! - `fuzz [TARGET] [--time S]`: each target (or one) runs S seconds (300 by default) from
//!   `fuzz/seeds/<target>/` into a working corpus `fuzz/corpus/<target>/`; then the inputs
//!   that reach code the kept seeds do not are merged into `fuzz/seeds/<target>/` (libFuzzer
//!   `-merge=1`: the minimal set, named by their SHA-1), and a line per target reports the
//!   time run, executions, corpus size and crashes (inputs kept in `fuzz/artifacts/<target>/`).
//! - `fuzz-check`: builds every target without instrumentation and replays every kept seed
//!   once (`-runs=0`): a parser change that makes an old input panic fails CI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The host triple the instrumented build targets (see the module's documentation).
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// What cargo-fuzz passes to rustc for libFuzzer's coverage, on stable.
const SANCOV_FLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions -Coverflow-checks";

/// The `[[bin]]` names of `fuzz/Cargo.toml`.
pub(crate) fn targets(root: &Path) -> Result<Vec<String>, String> {
    let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml"))
        .map_err(|e| format!("reading fuzz/Cargo.toml: {e}"))?;
    let mut out = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(v) = line.strip_prefix("name") {
            let name = v
                .trim_start()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"');
            out.push(name.to_owned());
        }
    }
    if out.is_empty() {
        return Err("fuzz/Cargo.toml names no [[bin]] target".into());
    }
    Ok(out)
}

/// Parsed `fuzz` arguments.
struct Args {
    target: Option<String>,
    seconds: u64,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args {
        target: None,
        seconds: 300,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let time = match a.as_str() {
            "--time" => Some(
                it.next()
                    .ok_or("--time needs a number of seconds")?
                    .as_str(),
            ),
            other => other.strip_prefix("--time="),
        };
        if let Some(t) = time {
            parsed.seconds = t
                .parse()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| format!("--time: {t:?} is not a positive number of seconds"))?;
        } else if a.starts_with('-') {
            return Err(format!(
                "fuzz: unknown flag {a} (usage: fuzz [TARGET] [--time S])"
            ));
        } else if parsed.target.replace(a.clone()).is_some() {
            return Err("fuzz: one target at most (or none for all)".into());
        }
    }
    Ok(parsed)
}

/// `cargo xtask fuzz [TARGET] [--time S]`.
pub(crate) fn fuzz(root: &Path, args: &[String]) -> Result<(), String> {
    let args = parse_args(args)?;
    let all = targets(root)?;
    let chosen: Vec<String> = match &args.target {
        Some(t) if all.contains(t) => vec![t.clone()],
        Some(t) => return Err(format!("no fuzz target {t}; there are: {}", all.join(", "))),
        None => all,
    };
    let fuzz = root.join("fuzz");
    let manifest = fuzz.join("Cargo.toml");
    let mut build = vec![
        "build",
        "--release",
        "--locked",
        "--target",
        TRIPLE,
        "--manifest-path",
        manifest.to_str().ok_or("non-UTF-8 path")?,
    ];
    for t in &chosen {
        build.extend(["--bin", t]);
    }
    super::cargo_env(root, &build, &[("RUSTFLAGS", SANCOV_FLAGS)])?;
    let bin_dir = fuzz.join("target").join(TRIPLE).join("release");
    let mut report = Vec::new();
    let mut crashed = Vec::new();
    for t in &chosen {
        let line = run_one(&fuzz, &bin_dir.join(t), t, args.seconds)?;
        if line.crashes > 0 {
            crashed.push(format!("{t} (fuzz/artifacts/{t}/)"));
        }
        report.push(line);
    }
    println!(
        "{:<22} {:>7} {:>12} {:>11} {:>7}",
        "TARGET", "TIME", "EXECUTIONS", "CORPUS", "CRASHES"
    );
    for r in &report {
        println!(
            "{:<22} {:>6}s {:>12} {:>5} (+{:<3}) {:>7}",
            r.target, r.seconds, r.executions, r.corpus, r.added, r.crashes
        );
    }
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!("crashes found in {}", crashed.join(", ")))
    }
}

/// One target's run.
struct Report {
    target: String,
    seconds: u64,
    executions: u64,
    /// Inputs kept under fuzz/seeds/ after the merge, and how many the merge added.
    corpus: usize,
    added: usize,
    crashes: usize,
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().filter(|e| e.path().is_file()).count())
        .unwrap_or(0)
}

fn run_one(fuzz: &Path, bin: &Path, target: &str, seconds: u64) -> Result<Report, String> {
    let seeds = fuzz.join("seeds").join(target);
    let corpus = fuzz.join("corpus").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    for d in [&seeds, &corpus, &artifacts] {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let crashes_before = files_in(&artifacts);
    let kept_before = files_in(&seeds);
    eprintln!("+ {} ({seconds} s)", bin.display());
    let started = Instant::now();
    // The working corpus first: libFuzzer writes what it finds into the first directory.
    let out = Command::new(bin)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .arg("-close_fd_mask=1")
        .arg(&corpus)
        .arg(&seeds)
        .output()
        .map_err(|e| format!("running {}: {e}", bin.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let executions = stderr
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if !out.status.success() && files_in(&artifacts) == crashes_before {
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        return Err(format!(
            "{target}: libFuzzer failed ({}) without a crash input:\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    let elapsed = started.elapsed().as_secs();
    // Keep what reaches new code, minimised against the seeds already kept.
    let merge = Command::new(bin)
        .arg("-merge=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-close_fd_mask=1")
        .arg(&seeds)
        .arg(&corpus)
        .output()
        .map_err(|e| format!("merging {target}'s corpus: {e}"))?;
    if !merge.status.success() {
        return Err(format!(
            "{target}: merging the corpus failed ({}): {}",
            merge.status,
            String::from_utf8_lossy(&merge.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ));
    }
    let kept = files_in(&seeds);
    Ok(Report {
        target: target.to_owned(),
        seconds: elapsed,
        executions,
        corpus: kept,
        added: kept.saturating_sub(kept_before),
        crashes: files_in(&artifacts) - crashes_before,
    })
}

/// `cargo xtask fuzz-check`: every target builds, and replays its kept seeds.
pub(crate) fn check(root: &Path) -> Result<(), String> {
    let fuzz = root.join("fuzz");
    let manifest = fuzz.join("Cargo.toml");
    let manifest = manifest.to_str().ok_or("non-UTF-8 path")?;
    super::cargo(
        root,
        &["build", "--locked", "--manifest-path", manifest, "--bins"],
    )?;
    let bin_dir: PathBuf = fuzz.join("target").join("debug");
    let artifacts = std::env::temp_dir().join(format!("cilium-fuzz-replay-{}", std::process::id()));
    std::fs::create_dir_all(&artifacts).map_err(|e| format!("{}: {e}", artifacts.display()))?;
    let mut failed = Vec::new();
    let mut replayed = 0;
    for t in targets(root)? {
        let seeds = fuzz.join("seeds").join(&t);
        let n = files_in(&seeds);
        if n == 0 {
            eprintln!("{t}: no kept seeds");
            continue;
        }
        let out = Command::new(bin_dir.join(&t))
            .arg("-runs=0")
            .arg(format!("-artifact_prefix={}/{t}-", artifacts.display()))
            .arg(&seeds)
            .output()
            .map_err(|e| format!("running {t}: {e}"))?;
        if out.status.success() {
            eprintln!("{t}: {n} seeds replayed");
            replayed += n;
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
            eprintln!(
                "{t}: FAILED ({}):\n{}",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            failed.push(t);
        }
    }
    let _ = std::fs::remove_dir_all(&artifacts);
    if failed.is_empty() {
        eprintln!("fuzz-check: {replayed} seeds replayed, no failure");
        Ok(())
    } else {
        Err(format!("seeds fail in {}", failed.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        let a = parse_args(&["helm_values".into(), "--time".into(), "60".into()]).unwrap();
        assert_eq!((a.target.as_deref(), a.seconds), (Some("helm_values"), 60));
        assert_eq!(parse_args(&[]).unwrap().seconds, 300);
        assert_eq!(parse_args(&["--time=5".into()]).unwrap().seconds, 5);
        for bad in [
            vec!["--time"],
            vec!["--time", "0"],
            vec!["--time", "x"],
            vec!["a", "b"],
            vec!["--jobs"],
        ] {
            let v: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(parse_args(&v).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_target_is_listed() {
        let root = super::super::workspace_root();
        let t = targets(&root).unwrap();
        assert!(t.contains(&"helm_values".to_owned()), "{t:?}");
        for name in &t {
            assert!(
                root.join(format!("fuzz/fuzz_targets/{name}.rs")).exists(),
                "{name}"
            );
        }
    }
}
