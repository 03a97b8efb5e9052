//! The `tenantry` command: parses flags, calls the libraries, maps errors to
//! exit codes. Every behaviour lives in a library crate; see `cli.rs` for the
//! commands and `commands.rs` for how each is carried out.
#![forbid(unsafe_code)]

#[macro_use]
mod output; // first: its macros (`outln!` ...) are used by the modules below

mod activity;
mod cli;
mod commands;
mod docs;
mod env;
mod hint;
mod inspect;
mod logging;
mod migrations;
mod ops;
mod provision;
mod secrets;
mod serve;
mod servers;
mod switch;
mod tokens;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            errln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
