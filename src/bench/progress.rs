//! The progress bar on stderr while runs are measured: one overall bar over the total
//! measuring time, with the current round, target and workload as its message.
//!
//! It draws only when asked and when stderr is a terminal, so tests, pipes and `--json`
//! output stay free of control characters.
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the bar moves while a run is measured.
const TICK: Duration = Duration::from_millis(100);

/// The bar over all runs of one invocation; cheap to clone (clones draw the same bar).
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar over `runs` runs of `per_run` each; drawn to stderr when `show` is set and
    /// stderr is a terminal, hidden otherwise.
    pub fn new(runs: u64, per_run: Duration, show: bool) -> Progress {
        if !show || !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let total_ms = runs.saturating_mul(millis(per_run)).max(1);
        let bar = ProgressBar::with_draw_target(Some(total_ms), ProgressDrawTarget::stderr());
        // The template is a constant that indicatif accepts; fall back to the default
        // style rather than fail a benchmark over its decoration.
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {percent:>3}% {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress { bar }
    }

    /// A bar that never draws (library use, tests).
    pub fn hidden() -> Progress {
        Progress {
            bar: ProgressBar::hidden(),
        }
    }

    /// Whether anything is drawn.
    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// A run starts: say which one.
    pub fn start_run(&self, round: usize, rounds: usize, target: &str, workload: &str) {
        self.bar.set_message(format!(
            "round {}/{rounds}  {target}  {workload}",
            round + 1
        ));
    }

    /// Move the bar while a run of length `per_run` is measured, until the returned
    /// guard is dropped; the guard then moves the bar to the run's end.
    pub fn measure(&self, per_run: Duration) -> RunGuard {
        let start_pos = self.bar.position();
        let bar = self.bar.clone();
        let per_ms = millis(per_run);
        let ticker = (!self.is_hidden()).then(|| {
            let bar = bar.clone();
            tokio::spawn(async move {
                let t0 = tokio::time::Instant::now();
                let mut tick = tokio::time::interval(TICK);
                loop {
                    tick.tick().await;
                    let done = millis(t0.elapsed()).min(per_ms);
                    bar.set_position(start_pos + done);
                }
            })
        });
        RunGuard {
            bar,
            end: start_pos + per_ms,
            ticker,
        }
    }

    /// Remove the bar before the report is printed.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Stops the ticker of one run; see [`Progress::measure`].
#[derive(Debug)]
pub struct RunGuard {
    bar: ProgressBar,
    end: u64,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        self.bar.set_position(self.end);
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hidden_when_not_asked_and_guard_moves_to_the_run_end() {
        let p = Progress::new(3, Duration::from_secs(1), false);
        assert!(p.is_hidden());
        p.start_run(0, 1, "proxy", "insert");
        drop(p.measure(Duration::from_millis(250)));
        drop(p.measure(Duration::from_millis(250)));
        assert_eq!(p.bar.position(), 500);
        p.finish();
    }
}
