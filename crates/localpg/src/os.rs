//! Who runs the PostgreSQL programs, and the file-system chores that follow
//! from it: PostgreSQL refuses to run as root, so when we are root every
//! `initdb`/`pg_ctl` runs as the `postgres` OS user, which must own the data
//! area and be able to reach it. Also: running a program and turning its
//! failure into an [`Error`].

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::Error;

/// How PostgreSQL programs are run: as ourselves, or (when we are root) as
/// the `postgres` OS user.
#[derive(Debug, Clone)]
pub(crate) enum RunAs {
    /// As the current user.
    Me,
    /// As another OS user, switched to with `runuser` or `setpriv`.
    User(OsUser),
}

/// An OS user PostgreSQL runs as.
#[derive(Debug, Clone)]
pub(crate) struct OsUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    switch: Switch,
}

#[derive(Debug, Clone)]
enum Switch {
    Runuser(PathBuf),
    Setpriv(PathBuf),
}

impl RunAs {
    /// `Me` unless we are root, then the `postgres` user.
    pub(crate) fn detect() -> Result<RunAs, Error> {
        if effective_uid() != 0 {
            return Ok(RunAs::Me);
        }
        let uid = id_of("-u")?;
        let gid = id_of("-g")?;
        let switch = if let Some(p) = find_program("runuser") {
            Switch::Runuser(p)
        } else if let Some(p) = find_program("setpriv") {
            Switch::Setpriv(p)
        } else {
            return Err(Error::NoUserSwitch);
        };
        Ok(RunAs::User(OsUser {
            name: "postgres".to_owned(),
            uid,
            gid,
            switch,
        }))
    }

    /// A command running `program` as this user, with `/` as its working
    /// directory (our own may not be reachable by the `postgres` user).
    pub(crate) fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = match self {
            RunAs::Me => Command::new(program),
            RunAs::User(user) => {
                let mut cmd;
                match &user.switch {
                    Switch::Runuser(runuser) => {
                        cmd = Command::new(runuser);
                        cmd.args(["-u", &user.name, "--"]);
                    }
                    Switch::Setpriv(setpriv) => {
                        cmd = Command::new(setpriv);
                        cmd.arg(format!("--reuid={}", user.uid))
                            .arg(format!("--regid={}", user.gid))
                            .arg("--init-groups")
                            .arg("--");
                    }
                }
                cmd.arg(program);
                cmd
            }
        };
        cmd.current_dir("/");
        cmd
    }

    /// The prefix [`RunAs::command`] puts before the program, for shell scripts.
    pub(crate) fn prefix(&self) -> Vec<String> {
        let cmd = self.command("x");
        let mut v: Vec<String> = vec![cmd.get_program().to_string_lossy().into_owned()];
        v.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
        v.pop(); // the "x"
        if let RunAs::Me = self {
            v.clear();
        }
        v
    }

    /// Give `path` to the PostgreSQL user (no-op when that is us).
    pub(crate) fn give(&self, path: &Path) -> Result<(), Error> {
        if let RunAs::User(user) = self {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .map_err(|e| Error::io("change the owner of", path, e))?;
        }
        Ok(())
    }

    /// Make sure the PostgreSQL user can traverse every ancestor of `path`,
    /// adding the "search by others" bit (o+x, never read) where it is
    /// missing. No-op when PostgreSQL runs as us.
    pub(crate) fn ensure_reachable(&self, path: &Path) -> Result<(), Error> {
        let RunAs::User(user) = self else {
            return Ok(());
        };
        for dir in path.ancestors().skip(1) {
            if dir.as_os_str().is_empty() {
                continue;
            }
            let meta = fs::metadata(dir).map_err(|e| Error::io("inspect", dir, e))?;
            let mode = meta.mode();
            let can = (meta.uid() == user.uid && mode & 0o100 != 0)
                || (meta.gid() == user.gid && mode & 0o010 != 0)
                || mode & 0o001 != 0;
            if !can {
                fs::set_permissions(dir, fs::Permissions::from_mode((mode | 0o001) & 0o7777))
                    .map_err(|e| Error::io("let the postgres user traverse (chmod o+x)", dir, e))?;
            }
        }
        Ok(())
    }
}

/// Our effective user id, read from `/proc/self/status` (falling back to
/// `id -u`), so that this crate needs no `unsafe`.
pub(crate) fn effective_uid() -> u32 {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        for line in status.lines() {
            if let Some(rest) = line.strip_prefix("Uid:") {
                // real, effective, saved, filesystem
                if let Some(euid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                    return euid;
                }
            }
        }
    }
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u32::MAX)
}

fn id_of(flag: &str) -> Result<u32, Error> {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .map_err(|e| Error::NoPostgresUser {
            detail: format!("`id {flag} postgres`: {e}"),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().parse() {
        Ok(n) if out.status.success() => Ok(n),
        _ => Err(Error::NoPostgresUser {
            detail: format!(
                "`id {flag} postgres`: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
    }
}

/// `name` on PATH or in the sbin directories (which root's PATH may lack).
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Render a command for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains([' ', '"', '\'']) {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Run `cmd` to completion (feeding it `stdin`), returning its stdout, or an
/// error carrying its stderr and `hint`.
pub(crate) fn run(mut cmd: Command, stdin: Option<&str>, hint: &str) -> Result<String, Error> {
    let command = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let spawn_err = |e| Error::Spawn {
        command: command.clone(),
        source: e,
        hint: hint.to_owned(),
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        let input = input.to_owned();
        // Write from a thread so a chatty child cannot deadlock us.
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().map_err(spawn_err)?;
        let _ = writer.join();
        finish(command, out, hint)
    } else {
        let out = child.wait_with_output().map_err(spawn_err)?;
        finish(command, out, hint)
    }
}

fn finish(command: String, out: std::process::Output, hint: &str) -> Result<String, Error> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    Err(Error::Command {
        command,
        status: out.status.to_string(),
        stderr: if stderr.is_empty() {
            stdout.trim().to_owned()
        } else {
            stderr
        },
        hint: hint.to_owned(),
    })
}
