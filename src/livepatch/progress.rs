//! Stage reporting: a spinner per stage on a terminal, plain log lines otherwise, and the time each
//! stage took for the closing summary.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// The stages of a run, timed.
pub struct Stages {
    tty: bool,
    quiet: bool,
    current: Option<(String, Instant, Option<ProgressBar>)>,
    pub done: Vec<(String, Duration)>,
}

impl Stages {
    /// `quiet` silences everything (for `--json`).
    pub fn new(quiet: bool) -> Stages {
        Stages {
            tty: std::io::stderr().is_terminal(),
            quiet,
            current: None,
            done: Vec::new(),
        }
    }

    /// Ends the current stage and starts `name`.
    pub fn start(&mut self, name: &str, detail: &str) {
        self.finish();
        let bar = if self.quiet {
            None
        } else if self.tty {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_prefix(name.to_string());
            b.set_message(detail.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            Some(b)
        } else {
            eprintln!("klpx: {name}: {detail}");
            None
        };
        self.current = Some((name.to_string(), Instant::now(), bar));
    }

    /// Ends the current stage, if any.
    pub fn finish(&mut self) {
        if let Some((name, start, bar)) = self.current.take() {
            let took = start.elapsed();
            if let Some(b) = bar {
                b.finish_with_message(format!("done in {:.1} s", took.as_secs_f64()));
            }
            self.done.push((name, took));
        }
    }

    /// A note that does not end the stage.
    pub fn note(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.current {
            Some((_, _, Some(b))) => b.println(format!("klpx: {text}")),
            _ => eprintln!("klpx: {text}"),
        }
    }
}

impl Drop for Stages {
    fn drop(&mut self) {
        if let Some((_, _, Some(b))) = self.current.take() {
            b.abandon();
        }
    }
}
