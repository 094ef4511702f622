//! What the sender sees while a leak is on its way, on standard error: a
//! spinner line with the stage and the elapsed time on a terminal, plain
//! timestamped lines otherwise (logs, scripts, tests). Standard output is
//! left for the result.

use std::{
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

/// The progress display of one command.
pub struct Progress {
    spinner: Option<ProgressBar>,
    plain: bool,
    start: Instant,
}

impl Progress {
    /// A spinner if standard error is a terminal, plain lines otherwise;
    /// nothing at all when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let spinner = (terminal && !quiet).then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            spinner,
            plain: !terminal && !quiet,
            start: Instant::now(),
        }
    }

    /// The current stage: "sending", "waiting for the receipt"…
    pub fn stage(&self, message: impl Into<String>) {
        let message = message.into();
        if let Some(bar) = &self.spinner {
            bar.set_message(message);
        } else if self.plain {
            eprintln!("[{:>6.1}s] {message}", self.start.elapsed().as_secs_f64());
        }
    }

    /// A line that stays (a warning, a retransmission).
    pub fn note(&self, message: impl AsRef<str>) {
        let message = message.as_ref();
        if let Some(bar) = &self.spinner {
            bar.suspend(|| eprintln!("{message}"));
        } else if self.plain {
            eprintln!("[{:>6.1}s] {message}", self.start.elapsed().as_secs_f64());
        }
    }

    /// Time since the command started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Removes the spinner.
    pub fn finish(&self) {
        if let Some(bar) = &self.spinner {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
