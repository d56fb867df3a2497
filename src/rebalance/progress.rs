//! What `rebalance apply` shows while it runs: log lines always (stderr), and
//! indicatif bars for the copies when stderr is a terminal — rows per table and overall,
//! with rows/s and ETA.
use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Lines and bars of one run.
pub struct Progress {
    bars: Option<MultiProgress>,
    started: std::time::Instant,
}

impl Progress {
    /// Bars only when asked and stderr is a terminal (tests and pipes get plain lines).
    pub fn new(bars: bool) -> Progress {
        let bars = (bars && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress {
            bars,
            started: std::time::Instant::now(),
        }
    }

    /// A step finished or started: one line on stderr (above the bars, if any).
    pub fn line(&self, text: impl AsRef<str>) {
        // seconds since the start: what took long is visible in any log
        let text = format!(
            "pgshard rebalance: [{:7.2}s] {}",
            self.started.elapsed().as_secs_f64(),
            text.as_ref()
        );
        match &self.bars {
            Some(mp) => {
                let _ = mp.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    fn bar(&self, len: u64, template: &str, prefix: &str) -> ProgressBar {
        let Some(mp) = &self.bars else {
            return ProgressBar::hidden();
        };
        let bar = mp.add(ProgressBar::new(len.max(1)));
        // The templates are constants indicatif accepts; the default style is a fine
        // fallback rather than a reason to fail a rebalance.
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(prefix.to_owned());
        bar
    }

    /// The bar over all rows being copied.
    pub fn overall(&self, rows: u64) -> ProgressBar {
        self.bar(
            rows,
            "{prefix:>28} [{bar:30}] {pos}/{len} rows  {per_sec}  ETA {eta}",
            "all tables",
        )
    }

    /// The bar of one table of one move.
    pub fn table(&self, name: &str, rows: u64) -> ProgressBar {
        self.bar(
            rows,
            "{prefix:>28} [{bar:30}] {pos}/{len} rows  {per_sec}",
            name,
        )
    }
}
