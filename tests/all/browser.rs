//! Headless Chromium (Debian's, installed by `tests/install-chromium`, which `tests/run`
//! calls) for the tests that look at pages: the loadtest report and the console. Started with
//! the flags that keep it off the network, a profile of the test's own, and virtual time so
//! a page's scripts (and its timers) have run before the DOM is read.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=2500",
    "--enable-logging=stderr",
];

/// A page after its scripts ran.
pub struct Page {
    /// The DOM.
    pub dom: String,
    /// Chromium's log, where console messages and uncaught errors land.
    pub log: String,
}

/// Debian's Chromium.
fn chromium() -> PathBuf {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("chromium is not installed: run tests/install-chromium (tests/run does)");
}

fn run(url: &str, profile: &Path, (width, height): (u32, u32), action: &str) -> Output {
    Command::new(chromium())
        .args(FLAGS)
        .arg("--v=0")
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(action)
        .arg(url)
        .output()
        .expect("chromium runs")
}

/// The page at `url` in a window of `size`.
pub fn dump(url: &str, profile: &Path, size: (u32, u32)) -> Page {
    let out = run(url, profile, size, "--dump-dom");
    Page {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        log: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A screenshot of the page at `url` written to `to`; it must be a PNG of more than
/// `min_bytes` (a page with content, not a blank one).
pub fn screenshot(url: &str, profile: &Path, size: (u32, u32), to: &Path, min_bytes: usize) {
    let out = run(
        url,
        profile,
        size,
        &format!("--screenshot={}", to.display()),
    );
    let png =
        std::fs::read(to).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > min_bytes,
        "{}: {} bytes",
        to.display(),
        png.len()
    );
}
