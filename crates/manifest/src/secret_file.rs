//! The rules a file must meet before tenantry takes a password from it, and
//! the one reader that enforces them, for a user's `password_file` and for
//! the passwords tenantry generates under `[paths] secrets` alike.
//!
//! A password file is read only if:
//!
//! - after following symbolic links, it is a **regular file**: never a
//!   directory, a device (`/dev/zero`), a FIFO or a socket. This is checked
//!   before opening (so a FIFO cannot block) and again on the open file;
//! - it holds at most [`MAX_PASSWORD_FILE_BYTES`] (4 KiB), checked on the
//!   open file *before* reading, and no more than that is ever read;
//! - it is UTF-8 text of **exactly one line**: trailing line breaks are
//!   fine, a second line is not;
//! - that line is not empty or only white space. It is the password as is
//!   (leading and trailing spaces kept).
//!
//! On Unix, as ssh demands of a private key, the file must also be **private**:
//! owned by the user tenantry runs as, with no permission for group or
//! others (mode 0600 or 0400).
//!
//! - A user's `password_file` is not tenantry's to change: a file that is
//!   not private is refused, and the error says `chmod 600 <file>`.
//! - Generated passwords are tenantry's own (it creates them 0600 in a 0700
//!   directory). If that file or the secrets directory itself has been
//!   opened up to group or others, tenantry puts it back (0600, 0700) and
//!   logs a warning, since the passwords in it may have been seen. One that
//!   belongs to another user is refused.
//!
//! Nothing here ever puts file contents in an error.

use std::io::{ErrorKind, Read};
use std::path::Path;

use secrecy::SecretString;

/// The largest password file tenantry reads, in bytes.
pub const MAX_PASSWORD_FILE_BYTES: u64 = 4096;

/// Whose file a password file is: what to do when it is not private.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Whose {
    /// A user's `password_file`: refuse it.
    User,
    /// A password tenantry generated: make it private again, with a warning.
    Tenantry,
}

/// Why a password file (or the secrets directory) is not used. Holds no
/// file contents.
#[derive(Debug)]
pub(crate) enum Problem {
    Missing,
    /// What it is instead: "a directory", "a FIFO", ...
    NotRegular(&'static str),
    NotADirectory,
    NotOwned {
        uid: u32,
    },
    Exposed {
        mode: u32,
    },
    TooLarge {
        size: u64,
    },
    NotText,
    Lines {
        count: usize,
    },
    Empty,
    Blank,
    Io(std::io::Error),
}

impl Problem {
    fn from_io(e: std::io::Error) -> Problem {
        if e.kind() == ErrorKind::NotFound {
            Problem::Missing
        } else {
            Problem::Io(e)
        }
    }

    /// What is wrong, as the predicate of "password file <path> ...".
    pub(crate) fn what(&self) -> String {
        match self {
            Problem::Missing => "does not exist".into(),
            Problem::NotRegular(kind) => format!("is {kind}, not a regular file"),
            Problem::NotADirectory => "is not a directory".into(),
            Problem::NotOwned { uid } => {
                format!("belongs to another user (uid {uid}), not to the one running tenantry")
            }
            Problem::Exposed { mode } => {
                format!("can be read or written by group or others (mode {mode:04o})")
            }
            Problem::TooLarge { size } => {
                format!("is {size} bytes; a password file holds at most {MAX_PASSWORD_FILE_BYTES}")
            }
            Problem::NotText => "is not UTF-8 text".into(),
            Problem::Lines { count } => format!("holds {count} lines; a password file holds one"),
            Problem::Empty => "is empty".into(),
            Problem::Blank => "holds only white space".into(),
            Problem::Io(e) => format!("cannot be read: {e}"),
        }
    }

    /// How to fix it, for the file or directory at `path`.
    pub(crate) fn help(&self, path: &Path, whose: Whose) -> String {
        let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink());
        if link && matches!(self, Problem::Exposed { .. } | Problem::NotOwned { .. }) {
            // Never advise a chmod through a link to someone else's file.
            let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            return format!(
                "{} is a link to {}: point password_file at a file of your own, holding only the password, with `chmod 600`",
                path.display(),
                target.display()
            );
        }
        let path = path.display();
        match (self, whose) {
            (Problem::Exposed { .. }, Whose::User) => format!(
                "run `chmod 600 {path}`: a password file must be private to its owner, as ssh requires of a private key"
            ),
            (Problem::NotOwned { .. }, Whose::User) => {
                "copy the password into a file of your own, with `chmod 600`".into()
            }
            (Problem::NotOwned { .. } | Problem::NotADirectory, Whose::Tenantry) => {
                "point [paths] secrets at a directory of your own, or remove that directory to have tenantry create it".into()
            }
            (Problem::Missing, _) => {
                "create it holding the password, or remove password_file to have a password generated".into()
            }
            (Problem::Io(_), _) => "check the path and its permissions".into(),
            (Problem::Empty | Problem::Blank, Whose::User) => "write the password into it".into(),
            (_, Whose::User) => {
                "point password_file at a regular file holding the password alone on one line (a trailing newline is fine)".into()
            }
            (_, Whose::Tenantry) => {
                format!("delete {path} to have a new password generated")
            }
        }
    }
}

/// Reads the password in `path` under the rules of this module.
pub(crate) fn read(path: &Path, whose: Whose) -> Result<SecretString, Problem> {
    // `metadata` follows links: the target must be a regular file. Checked
    // before opening, which would block on a FIFO.
    let meta = std::fs::metadata(path).map_err(Problem::from_io)?;
    regular(&meta)?;
    let mut file = open(path).map_err(Problem::from_io)?;
    // The file opened may not be the one looked at.
    let meta = file.metadata().map_err(Problem::Io)?;
    regular(&meta)?;
    private(path, &file, &meta, whose)?;
    if meta.len() > MAX_PASSWORD_FILE_BYTES {
        return Err(Problem::TooLarge { size: meta.len() });
    }
    let mut text = String::new();
    (&mut file)
        .take(MAX_PASSWORD_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            if e.kind() == ErrorKind::InvalidData {
                Problem::NotText
            } else {
                Problem::Io(e)
            }
        })?;
    // It may have grown since the check.
    if text.len() as u64 > MAX_PASSWORD_FILE_BYTES {
        let size = file.metadata().map_or(text.len() as u64, |m| m.len());
        return Err(Problem::TooLarge { size });
    }
    one_line(text)
}

/// The password in a file's text: one line, trailing line breaks dropped.
fn one_line(mut text: String) -> Result<SecretString, Problem> {
    let keep = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(keep);
    if text.contains(['\n', '\r']) {
        // Line breaks: "\n", "\r\n" or a lone "\r".
        let breaks =
            text.matches('\n').count() + text.matches('\r').count() - text.matches("\r\n").count();
        return Err(Problem::Lines { count: breaks + 1 });
    }
    if text.is_empty() {
        return Err(Problem::Empty);
    }
    if text.trim().is_empty() {
        return Err(Problem::Blank);
    }
    Ok(SecretString::from(text))
}

fn regular(meta: &std::fs::Metadata) -> Result<(), Problem> {
    if meta.is_file() {
        return Ok(());
    }
    Err(Problem::NotRegular(kind(meta)))
}

#[cfg(unix)]
fn kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "something else"
    }
}

#[cfg(not(unix))]
fn kind(meta: &std::fs::Metadata) -> &'static str {
    if meta.is_dir() {
        "a directory"
    } else {
        "something else"
    }
}

/// Opens for reading without blocking (a FIFO swapped in after the check)
/// and without taking a terminal as the controlling one.
#[cfg(unix)]
fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32)
        .open(path)
}

#[cfg(not(unix))]
fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

/// The open `file` (at `path`) belongs to the user running tenantry and no
/// one else may use it; tenantry's own files are made so again.
#[cfg(unix)]
fn private(
    path: &Path,
    file: &std::fs::File,
    meta: &std::fs::Metadata,
    whose: Whose,
) -> Result<(), Problem> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(Problem::NotOwned { uid: meta.uid() });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    match whose {
        Whose::User => Err(Problem::Exposed { mode }),
        Whose::Tenantry => {
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))
                .map_err(Problem::Io)?;
            tracing::warn!(
                "generated password file {} could be read or written by group or others (mode {mode:04o}); made it {:04o}. Others may have seen the password: `tenantry rotate` replaces it",
                path.display(),
                mode & 0o700
            );
            Ok(())
        }
    }
}

#[cfg(not(unix))]
fn private(
    _path: &Path,
    _file: &std::fs::File,
    _meta: &std::fs::Metadata,
    _whose: Whose,
) -> Result<(), Problem> {
    Ok(())
}

/// The directory of generated passwords, if it exists, is a directory that
/// belongs to the user running tenantry and is private to it (made 0700
/// again, with a warning, when group or others have access).
#[cfg(unix)]
pub(crate) fn private_dir(dir: &Path) -> Result<(), Problem> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Problem::Io(e)),
    };
    if !meta.is_dir() {
        return Err(Problem::NotADirectory);
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(Problem::NotOwned { uid: meta.uid() });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(Problem::Io)?;
        tracing::warn!(
            "secrets directory {} could be used by group or others (mode {mode:04o}); made it 0700. Others may have seen the passwords in it: `tenantry rotate` replaces them",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn private_dir(dir: &Path) -> Result<(), Problem> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(Problem::NotADirectory),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Problem::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    /// Writes `text` to `dir/name` with mode 0600.
    fn private_file(dir: &Path, name: &str, text: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        set_mode(&path, 0o600);
        path
    }

    fn set_mode(path: &Path, mode: u32) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = (path, mode);
    }

    fn problem(path: &Path, whose: Whose) -> Problem {
        match read(path, whose) {
            Ok(_) => panic!("{} was read", path.display()),
            Err(p) => p,
        }
    }

    #[test]
    fn one_line_with_or_without_a_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "pw with spaces ",
            "pw with spaces \n",
            "pw with spaces \r\n\n",
        ] {
            let path = private_file(dir.path(), "pw", text.as_bytes());
            assert_eq!(
                read(&path, Whose::User).unwrap().expose_secret(),
                "pw with spaces "
            );
        }
    }

    #[test]
    fn more_than_one_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (text, count) in [
            ("root:x:0:0\ndaemon:x:1:1\n", 2),
            ("\npw\n", 2),
            ("a\rb", 2),
        ] {
            let path = private_file(dir.path(), "pw", text.as_bytes());
            let p = problem(&path, Whose::User);
            assert!(
                matches!(p, Problem::Lines { count: c } if c == count),
                "{p:?}"
            );
            assert!(!p.what().contains("root"), "{}", p.what());
        }
    }

    #[test]
    fn empty_and_blank_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = private_file(dir.path(), "pw", b"\n\n");
        assert!(matches!(problem(&path, Whose::User), Problem::Empty));
        let path = private_file(dir.path(), "pw", b"  \t \n");
        assert!(matches!(problem(&path, Whose::User), Problem::Blank));
    }

    #[test]
    fn a_file_over_4_kib_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = private_file(dir.path(), "pw", &[b'x'; 4096]);
        assert_eq!(
            read(&path, Whose::User).unwrap().expose_secret().len(),
            4096
        );
        let path = private_file(dir.path(), "pw", &[b'x'; 4097]);
        assert!(matches!(
            problem(&path, Whose::User),
            Problem::TooLarge { size: 4097 }
        ));
    }

    #[test]
    fn non_utf8_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = private_file(dir.path(), "pw", b"\xff\xfe\n");
        assert!(matches!(problem(&path, Whose::User), Problem::NotText));
    }

    #[test]
    fn directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = problem(dir.path(), Whose::User);
        assert!(matches!(p, Problem::NotRegular("a directory")), "{p:?}");
    }

    #[cfg(unix)]
    #[test]
    fn devices_fifos_and_links_to_them_are_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        // /dev/zero would be read forever; /dev/null would be "empty".
        for dev in ["/dev/zero", "/dev/null"] {
            let p = problem(Path::new(dev), Whose::User);
            assert!(matches!(p, Problem::NotRegular("a device")), "{dev}: {p:?}");
            let link = dir.path().join(dev.trim_start_matches("/dev/"));
            std::os::unix::fs::symlink(dev, &link).unwrap();
            let p = problem(&link, Whose::User);
            assert!(matches!(p, Problem::NotRegular("a device")), "{dev}: {p:?}");
        }
        // Opening a FIFO with no writer would block: it must not be opened.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let p = problem(&fifo, Whose::User);
        assert!(matches!(p, Problem::NotRegular("a FIFO")), "{p:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_to_a_private_regular_file_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = private_file(dir.path(), "target", b"linked-pw\n");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(
            read(&link, Whose::User).unwrap().expose_secret(),
            "linked-pw"
        );
        // A link to a file others can read is refused like the file itself,
        // and the help does not advise a chmod through the link.
        set_mode(&target, 0o644);
        let p = problem(&link, Whose::User);
        assert!(matches!(p, Problem::Exposed { mode: 0o644 }), "{p:?}");
        let help = p.help(&link, Whose::User);
        assert!(
            help.contains(&format!("is a link to {}", target.display()))
                && !help.contains("chmod 600 /"),
            "{help}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_users_file_others_can_read_is_refused_with_chmod_600() {
        let dir = tempfile::tempdir().unwrap();
        let path = private_file(dir.path(), "pw", b"pw\n");
        for mode in [0o640, 0o604, 0o620, 0o644] {
            set_mode(&path, mode);
            let p = problem(&path, Whose::User);
            assert!(
                matches!(p, Problem::Exposed { mode: m } if m == mode),
                "{p:?}"
            );
            let help = p.help(&path, Whose::User);
            assert!(
                help.contains(&format!("chmod 600 {}", path.display())),
                "{help}"
            );
        }
        set_mode(&path, 0o400);
        assert!(read(&path, Whose::User).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_file_of_another_user_is_refused() {
        // /etc/passwd belongs to root; when the tests run as root, there is
        // no other user's file to try.
        if rustix::process::geteuid().is_root() {
            return;
        }
        let p = problem(Path::new("/etc/passwd"), Whose::User);
        assert!(matches!(p, Problem::NotOwned { uid: 0 }), "{p:?}");
        let p = problem(Path::new("/etc/passwd"), Whose::Tenantry);
        assert!(matches!(p, Problem::NotOwned { uid: 0 }), "{p:?}");
    }

    #[cfg(unix)]
    #[test]
    fn tenantrys_own_files_and_directory_are_made_private_again() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        set_mode(&secrets, 0o755);
        private_dir(&secrets).unwrap();
        assert_eq!(mode(&secrets), 0o700);

        let path = private_file(&secrets, "u1", b"generated\n");
        set_mode(&path, 0o644);
        assert_eq!(
            read(&path, Whose::Tenantry).unwrap().expose_secret(),
            "generated"
        );
        assert_eq!(mode(&path), 0o600);

        // Missing is fine (nothing generated yet); a file is not a directory.
        private_dir(&dir.path().join("nope")).unwrap();
        assert!(matches!(private_dir(&path), Err(Problem::NotADirectory)));
    }
}
