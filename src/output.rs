//! Writing to standard output and standard error when the reader may have
//! gone: `tenantry list | head -1` closes the pipe after one line, and
//! `println!` would panic on the next write ("Broken pipe", exit 101). Here
//! a closed pipe ends the process at once and silently, with the status a
//! Unix tool killed by SIGPIPE reports (141), so `set -o pipefail` scripts
//! see what they would see from `cat`. Any other write error is reported
//! once and exits 1.
//!
//! Use [`out!`](crate::out), [`outln!`](crate::outln) and
//! [`errln!`](crate::errln) instead of `print!`, `println!` and `eprintln!`.

use std::io::{ErrorKind, Write};

/// The exit status after a write to a closed pipe: 128 + SIGPIPE (13).
pub const BROKEN_PIPE_EXIT: i32 = 141;

/// What to do after a failed write: `None` to carry on (it worked), or the
/// exit status.
pub fn exit_status(result: &std::io::Result<()>) -> Option<i32> {
    match result {
        Ok(()) => None,
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Some(BROKEN_PIPE_EXIT),
        Err(_) => Some(1),
    }
}

fn finish(result: std::io::Result<()>, stream: &str) {
    if let Some(code) = exit_status(&result) {
        if code != BROKEN_PIPE_EXIT {
            if let Err(e) = &result {
                // Standard error may be the stream that failed: best effort.
                let _ = writeln!(std::io::stderr(), "error: cannot write to {stream}: {e}");
            }
        }
        std::process::exit(code);
    }
}

/// Writes to standard output, ending the process if it is gone.
pub fn stdout(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    finish(
        out.write_fmt(args).and_then(|()| out.flush()),
        "standard output",
    );
}

/// Writes to standard error, ending the process if it is gone.
pub fn stderr(args: std::fmt::Arguments<'_>) {
    finish(std::io::stderr().lock().write_fmt(args), "standard error");
}

/// `print!` that ends the process quietly when standard output is a closed pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::stdout(format_args!($($arg)*))
    };
}

/// `println!` that ends the process quietly when standard output is a closed pipe.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that ends the process quietly when standard error is a closed pipe.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_exits_quietly_with_the_sigpipe_status() {
        assert_eq!(exit_status(&Ok(())), None);
        let gone = std::io::Error::from(ErrorKind::BrokenPipe);
        assert_eq!(exit_status(&Err(gone)), Some(141));
        let full = std::io::Error::other("disk full");
        assert_eq!(exit_status(&Err(full)), Some(1));
    }
}
