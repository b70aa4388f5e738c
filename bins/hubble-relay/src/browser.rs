// SPDX-License-Identifier: Apache-2.0

//! Headless Chromium, to see the UI as a browser draws it: the page's DOM after its
//! scripts ran ([`dump_dom`]) and a PNG screenshot ([`screenshot`]). Each run gets a
//! fresh profile directory (removed afterwards) and is killed if it outlives its
//! deadline.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Chromium binary on `PATH` (`chromium`, then `chromium-browser`), if any.
pub fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|n| dir.join(n)))
        .find(|p| p.is_file())
}

/// How a page is rendered.
#[derive(Debug, Clone, Copy)]
pub struct Render {
    /// Window width and height, pixels.
    pub size: (u32, u32),
    /// Virtual time the page's scripts get before the capture (their fetches included).
    pub budget: Duration,
    /// Wall-clock limit of the whole run.
    pub deadline: Duration,
}

impl Default for Render {
    fn default() -> Self {
        Render {
            size: (1000, 700),
            budget: Duration::from_secs(4),
            deadline: Duration::from_secs(90),
        }
    }
}

fn run(url: &str, render: Render, capture: &[String]) -> Result<Vec<u8>, String> {
    let bin = chromium().ok_or("chromium is not installed (apt-get install chromium)")?;
    let profile = std::env::temp_dir().join(format!(
        "crs-chromium-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&profile).map_err(|e| format!("{}: {e}", profile.display()))?;
    let out_file = profile.join("stdout");
    let stdout = std::fs::File::create(&out_file).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&bin);
    cmd.args([
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--force-color-profile=srgb",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--window-size={},{}", render.size.0, render.size.1))
    .arg(format!(
        "--virtual-time-budget={}",
        render.budget.as_millis()
    ))
    .args(capture)
    .arg(url)
    .env("HOME", &profile)
    .stdin(Stdio::null())
    .stdout(stdout)
    .stderr(Stdio::null());
    // Chromium refuses to run as root inside its sandbox.
    if std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
    {
        cmd.arg("--no-sandbox");
    }
    let result = (|| {
        let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                if !status.success() {
                    return Err(format!("chromium exited with {status}"));
                }
                break;
            }
            if started.elapsed() > render.deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "chromium did not finish within {:?}",
                    render.deadline
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read(&out_file).map_err(|e| e.to_string())
    })();
    let _ = std::fs::remove_dir_all(&profile);
    result
}

/// The page's DOM once its scripts ran for the virtual time budget.
pub fn dump_dom(url: &str, render: Render) -> Result<String, String> {
    let out = run(url, render, &["--dump-dom".to_owned()])?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// A PNG screenshot of the page, written to `png`.
pub fn screenshot(url: &str, render: Render, png: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(png);
    run(url, render, &[format!("--screenshot={}", png.display())])?;
    if png.is_file() {
        Ok(())
    } else {
        Err(format!("chromium wrote no screenshot to {}", png.display()))
    }
}
