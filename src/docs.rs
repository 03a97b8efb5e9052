//! Documentation generated from the clap definitions: shell completions
//! (clap_complete) and man pages (clap_mangen).

use std::path::Path;

use anyhow::{Context as _, Result};
use clap::CommandFactory;

use crate::cli::Cli;

/// Prints the completion script of `shell` on standard output.
pub fn completions(shell: clap_complete::Shell) -> Result<u8> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "tenantry", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
    Ok(0)
}

/// Writes `tenantry.1` and `tenantry-<command>.1` for every command (and
/// subcommand) into `dir`.
pub fn man(dir: &Path) -> Result<u8> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".1"))
        .collect();
    pages.sort();
    outln!(
        "Wrote {} man page(s) into {}: {}",
        pages.len(),
        dir.display(),
        pages.join(", ")
    );
    Ok(0)
}
