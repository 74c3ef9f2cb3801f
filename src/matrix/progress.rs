//! Progress of a matrix run: one line per architecture, redrawn on a terminal, or plain lines
//! prefixed with the architecture otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use klpx_arch::Arch;

use super::run::ArchFailure;
use crate::livepatch::pipeline::BuildReport;

pub struct Board {
    quiet: bool,
    multi: Option<MultiProgress>,
    bars: HashMap<Arch, ProgressBar>,
}

impl Board {
    pub fn new(arches: &[Arch], quiet: bool) -> Board {
        let tty = std::io::stderr().is_terminal() && !quiet;
        let multi = tty.then(MultiProgress::new);
        let mut bars = HashMap::new();
        if let Some(m) = &multi {
            for &a in arches {
                let b = m.add(ProgressBar::new_spinner());
                b.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:>8.bold} {msg} [{elapsed}]")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b.set_prefix(a.name());
                b.enable_steady_tick(Duration::from_millis(120));
                bars.insert(a, b);
            }
        }
        Board { quiet, multi, bars }
    }

    /// Says what `arch` is doing now.
    pub fn set(&self, arch: Arch, what: &str) {
        if self.quiet {
            return;
        }
        match self.bars.get(&arch) {
            Some(b) => b.set_message(what.to_string()),
            None => eprintln!("[{arch}] {what}"),
        }
    }

    /// A line for every architecture.
    pub fn note(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(format!("klpx: {text}"));
            }
            None => eprintln!("klpx: {text}"),
        }
    }

    /// Ends `arch`'s line with its outcome.
    pub fn done(&self, arch: Arch, outcome: &Result<BuildReport, ArchFailure>) {
        let what = match outcome {
            Ok(r) => format!("{:?}", r.outcome).to_lowercase(),
            Err(e) => format!("failed: {}", e.message.lines().next().unwrap_or("")),
        };
        if self.quiet {
            return;
        }
        match self.bars.get(&arch) {
            Some(b) => b.finish_with_message(what),
            None => eprintln!("[{arch}] {what}"),
        }
    }

    pub fn finish(&self) {
        for b in self.bars.values() {
            if !b.is_finished() {
                b.finish();
            }
        }
    }
}
