//! Runs one child process and measures it: wall-clock time and peak memory
//! (max RSS from the kernel's `rusage`, read when the child is reaped with
//! `wait4`). The only `unsafe` of the crate lives here.
//!
//! What does not live here: what the child is or what its output means.

use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How a measured child went.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub wall: Duration,
    /// Peak resident set size, in KiB (Linux reports `ru_maxrss` in KiB).
    pub max_rss_kib: u64,
    /// CPU time the child spent in user space and in the kernel.
    pub user_cpu: Duration,
    pub sys_cpu: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn max_rss_mib(&self) -> f64 {
        self.max_rss_kib as f64 / 1024.0
    }

    /// `wall 1.23 s, CPU 0.40 s user + 0.10 s sys, peak RSS 9.5 MiB`.
    pub fn summary(&self) -> String {
        format!(
            "wall {:.2} s, CPU {:.2} s user + {:.2} s sys, peak RSS {:.1} MiB",
            self.wall.as_secs_f64(),
            self.user_cpu.as_secs_f64(),
            self.sys_cpu.as_secs_f64(),
            self.max_rss_mib()
        )
    }
}

/// Spawns `cmd` (stdin closed, stdout and stderr captured), hands each
/// stdout line to `on_line` as it arrives, and reaps the child with
/// `wait4` to read its peak RSS. Wall time runs from spawn to reap.
pub fn run(cmd: &mut Command, mut on_line: impl FnMut(&str)) -> io::Result<Finished> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stderr_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    let mut reader = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut buf = Vec::new();
    // Read to EOF whatever the bytes are: the child must never block on a
    // full pipe.
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        on_line(line.trim_end_matches('\n'));
        stdout.push_str(&line);
    }
    let (raw_status, usage) = wait4(pid)?;
    let wall = start.elapsed();
    // The child is reaped: dropping `child` does not wait again.
    drop(child);
    let stderr = stderr_reader.join().unwrap_or_default();
    Ok(Finished {
        status: ExitStatus::from_raw(raw_status),
        wall,
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        user_cpu: duration(usage.ru_utime),
        sys_cpu: duration(usage.ru_stime),
        stdout,
        stderr,
    })
}

fn duration(t: libc::timeval) -> Duration {
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let micros = u32::try_from(t.tv_usec).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
}

/// Blocks until `pid` exits; returns its raw wait status and its rusage.
#[allow(unsafe_code)]
fn wait4(pid: libc::pid_t) -> io::Result<(libc::c_int, libc::rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is a plain C struct of integers, for which all-zero
    // bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid, exclusively borrowed
        // locals that outlive the call; `pid` is our own unreaped child
        // (std never waits for it: we only drop the `Child` afterwards).
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
