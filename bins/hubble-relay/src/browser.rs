// SPDX-License-Identifier: Apache-2.0

//! Headless Chromium, to see the UI as a browser draws it: the page's DOM after its
//! scripts ran ([`dump_dom`]) and a PNG screenshot ([`screenshot`]). Each run gets a
//! fresh profile directory (removed afterwards) and is killed if it outlives its
//! deadline. [`elements`] and [`Image`] read what came back (the UI's tests use them).

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

/// The attributes of every element whose serialisation starts with `start` (for example
/// `<g class="workload"`), in document order.
pub fn elements(dom: &str, start: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    dom.match_indices(start)
        .map(|(i, _)| {
            let tag = &dom[i..dom[i..].find('>').map_or(dom.len(), |e| i + e)];
            let mut attrs = std::collections::BTreeMap::new();
            let mut rest = tag;
            while let Some(eq) = rest.find("=\"") {
                let key = rest[..eq].rsplit(' ').next().unwrap_or_default().to_owned();
                let after = &rest[eq + 2..];
                let Some(end) = after.find('"') else { break };
                attrs.insert(key, after[..end].to_owned());
                rest = &after[end + 1..];
            }
            attrs
        })
        .collect()
}

/// A decoded screenshot (8-bit RGB).
#[derive(Debug, Clone)]
pub struct Image {
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// Pixels, row by row.
    pub pixels: Vec<[u8; 3]>,
}

/// Whether two colours are equal within 3 per channel (anti-aliasing aside).
pub fn same_colour(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 3)
}

impl Image {
    /// Decodes an 8-bit PNG (RGB or RGBA).
    pub fn open(path: &Path) -> Result<Image, String> {
        let what = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let file = std::fs::File::open(path).map_err(|e| what(&e))?;
        let mut reader = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .map_err(|e| what(&e))?;
        let mut buf = vec![
            0;
            reader
                .output_buffer_size()
                .ok_or_else(|| what(&"too large"))?
        ];
        let info = reader.next_frame(&mut buf).map_err(|e| what(&e))?;
        if info.bit_depth != png::BitDepth::Eight
            || !matches!(info.color_type, png::ColorType::Rgb | png::ColorType::Rgba)
        {
            return Err(what(&"not an 8-bit RGB(A) image"));
        }
        let step = info.color_type.samples();
        let pixels = buf[..info.buffer_size()]
            .chunks(step)
            .map(|c| [c[0], c[1], c[2]])
            .collect();
        Ok(Image {
            width: info.width,
            height: info.height,
            pixels,
        })
    }

    /// How many pixels have `colour` (see [`same_colour`]).
    pub fn count(&self, colour: [u8; 3]) -> usize {
        self.pixels
            .iter()
            .filter(|p| same_colour(**p, colour))
            .count()
    }

    /// The share (0 to 1) of the pixels in the box `x,y,width,height` (as the UI's
    /// `data-page-box` gives it) that have `colour`; 0 for a box outside the image.
    pub fn share_in_box(&self, page_box: &str, colour: [u8; 3]) -> f64 {
        let b: Vec<u32> = page_box
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        let [x0, y0, w, h] = b[..] else { return 0.0 };
        if w == 0 || h == 0 || x0 + w > self.width || y0 + h > self.height {
            return 0.0;
        }
        let mut hits = 0u64;
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                let p = self.pixels[(y * self.width + x) as usize];
                hits += u64::from(same_colour(p, colour));
            }
        }
        hits as f64 / f64::from(w * h)
    }
}
