//! `klpx list`: the livepatch modules installed per kernel release, and the livepatches loaded now.

use anyhow::Result;
use serde::Serialize;

use crate::error::exit;
use crate::machine::Machine;
use crate::machine::livepatches::LoadedPatch;

#[derive(Serialize)]
struct Listing {
    release: Option<String>,
    installed: std::collections::BTreeMap<String, Vec<String>>,
    loaded: Vec<LoadedPatch>,
}

pub fn run(json: bool) -> Result<i32> {
    let m = Machine::default();
    let listing = Listing {
        release: m.release().ok(),
        installed: m
            .installed_modules()
            .into_iter()
            .map(|(r, mods)| {
                let names = mods
                    .iter()
                    .filter_map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                    .collect();
                (r, names)
            })
            .collect(),
        loaded: m.loaded_patches(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&listing).expect("serialisable")
        );
        return Ok(exit::OK);
    }
    println!("Installed livepatch modules ({}):", m.installed.display());
    if listing.installed.is_empty() {
        println!("  none");
    }
    for (release, mods) in &listing.installed {
        let running = if listing.release.as_deref() == Some(release) {
            " (running)"
        } else {
            ""
        };
        println!("  {release}{running}: {}", mods.join(" "));
    }
    println!("Loaded livepatches:");
    if listing.loaded.is_empty() {
        println!("  none");
    }
    for p in &listing.loaded {
        let state = if p.transition {
            if p.enabled {
                "enabling (transition)"
            } else {
                "disabling (transition)"
            }
        } else if p.enabled {
            "enabled"
        } else {
            "disabled"
        };
        let replace = match p.replace {
            Some(true) => ", replace",
            _ => "",
        };
        println!("  {} {state}{replace}", p.name);
        for o in &p.objects {
            let waiting = if o.patched { "" } else { " (not loaded)" };
            println!("    {}{waiting}: {}", o.name, o.functions.join(" "));
        }
    }
    Ok(exit::OK)
}
