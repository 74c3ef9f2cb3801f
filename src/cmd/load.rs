//! `klpx load` and `klpx unload`: a livepatch in and out of the running kernel.

use std::time::Duration;

use anyhow::Result;

use crate::cli::LoadArgs;
use crate::error::exit;
use crate::machine::Machine;
use crate::machine::livepatches::StalledTask;
use crate::machine::ops::Outcome;

/// Says how a transition ended; the exit status.
fn report(outcome: &Outcome, verb: &str) -> i32 {
    match outcome {
        Outcome::Done { name } => {
            println!("{name}: {verb}");
            exit::OK
        }
        Outcome::Stalled {
            name,
            tasks,
            reversed,
        } => {
            eprintln!(
                "klpx: {name}: the transition did not finish; {} task(s) still run code it replaces:",
                tasks.len()
            );
            for t in tasks.iter().take(20) {
                eprintln!("  {}", describe(t));
            }
            if tasks.len() > 20 {
                eprintln!("  ... and {} more", tasks.len() - 20);
            }
            if *reversed {
                eprintln!(
                    "klpx: {name}: reversed and removed; signal or stop those tasks and load it again (klpx never forces a transition)"
                );
            } else {
                eprintln!(
                    "klpx: {name}: the transition goes on in the kernel; signal or stop those tasks (`echo 1 > /sys/kernel/livepatch/{name}/signal` sends them a fake signal)"
                );
            }
            exit::UNPATCHABLE
        }
    }
}

fn describe(t: &StalledTask) -> String {
    let thread = if t.tid == t.pid {
        String::new()
    } else {
        format!(" thread {}", t.tid)
    };
    match &t.stack {
        Some(s) => format!("pid {}{thread} ({}) in {s}", t.pid, t.comm),
        None => format!("pid {}{thread} ({})", t.pid, t.comm),
    }
}

pub fn run(a: &LoadArgs) -> Result<i32> {
    let m = Machine::default();
    let timeout = Duration::from_secs(a.timeout);
    if let Some(module) = &a.module {
        return Ok(report(&m.load(module, timeout)?, "loaded, transition done"));
    }
    let release = m.release()?;
    let mods = m.installed_modules().remove(&release).unwrap_or_default();
    if mods.is_empty() {
        println!(
            "no livepatch modules installed for {release} ({})",
            m.installed.join(&release).display()
        );
        return Ok(exit::OK);
    }
    let mut worst = exit::OK;
    for module in mods {
        let name = module
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if m.module_loaded(&name) {
            println!("{name}: already loaded");
            continue;
        }
        let code = match m.load(&module, timeout) {
            Ok(outcome) => report(&outcome, "loaded, transition done"),
            Err(e) => {
                eprintln!("klpx: {e:#}");
                exit::USER
            }
        };
        worst = worst.max(code);
    }
    Ok(worst)
}

pub fn unload(name: &str, timeout: u64) -> Result<i32> {
    let m = Machine::default();
    Ok(report(
        &m.unload(name, Duration::from_secs(timeout))?,
        "disabled and removed",
    ))
}
