//! [`PasswordSource`]: where a user's password comes from (an environment
//! variable, a file, or a file generated once under the secrets directory),
//! and how to read or create it. Values only ever travel as [`SecretString`].
//!
//! Files, given or generated, are read under the rules of `secret_file.rs`
//! (a private regular file of at most 4 KiB holding one line); a variable
//! that is unset, empty or only white space is an error.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use rand::distributions::Alphanumeric;
use rand::Rng;
use secrecy::SecretString;

use crate::secret_file::{self, Problem, Whose};
use crate::ManifestError;

/// Length of a generated password, in characters of `[A-Za-z0-9]`.
pub const GENERATED_PASSWORD_LEN: usize = 32;

/// Where a user's password comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    /// The value of an environment variable.
    Env { var: String },
    /// The one line of a file (absolute path), trailing line breaks
    /// dropped. See [`load`](Self::load) for the rules the file must meet.
    File { path: PathBuf },
    /// A random password generated once and saved (0600) at `path`,
    /// `<secrets>/<username>`.
    Generated { path: PathBuf },
}

impl PasswordSource {
    /// The password if available now: the variable's value, the file's one
    /// line, or the generated file's if it exists (`None` if not generated
    /// yet).
    ///
    /// An unset, empty or blank variable is an error, and so is a password
    /// file that is missing or breaks a rule of `secret_file.rs`: not a
    /// regular file, over 4 KiB, not exactly one non-blank line, or (Unix)
    /// not private to the user running tenantry. A generated file or the
    /// secrets directory that others can use is made private again, with a
    /// warning.
    pub fn load(&self) -> Result<Option<SecretString>, ManifestError> {
        match self {
            PasswordSource::Env { var } => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(SecretString::from(v))),
                Ok(v) if v.is_empty() => Err(self.error("the variable is empty")),
                Ok(_) => Err(self.error("the variable holds only white space")),
                Err(std::env::VarError::NotPresent) => Err(self.error("the variable is not set")),
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(self.error("the variable is not valid UTF-8"))
                }
            },
            PasswordSource::File { path } => secret_file::read(path, Whose::User)
                .map(Some)
                .map_err(|p| self.file_error(path, &p)),
            PasswordSource::Generated { path } => {
                if let Some(dir) = path.parent() {
                    self.private_dir(dir)?;
                }
                match secret_file::read(path, Whose::Tenantry) {
                    Ok(s) => Ok(Some(s)),
                    Err(Problem::Missing) => Ok(None),
                    Err(p) => Err(self.file_error(path, &p)),
                }
            }
        }
    }

    /// Like [`load`](Self::load), but a `Generated` source with no file yet
    /// gets a new random password, written with mode 0600 (directories created
    /// 0700). The password is written and synced in a temporary file, then
    /// published under its name with a hard link, which fails if the name
    /// exists: two racing processes never overwrite each other, and the
    /// loser reads the winner's complete file (never a half-written one).
    pub fn ensure(&self) -> Result<SecretString, ManifestError> {
        if let Some(s) = self.load()? {
            return Ok(s);
        }
        let PasswordSource::Generated { path } = self else {
            unreachable!("load returns a value or an error for env and file sources");
        };
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(self.error("the path has no file name"));
        };
        create_private_dir(dir)
            .map_err(|e| self.error(format!("cannot create {}: {e}", dir.display())))?;
        self.private_dir(dir)?;
        let password = random_password();
        let tmp = temp_beside(dir, name);
        let written = create_new_private(&tmp).and_then(|mut file| {
            file.write_all(password.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        });
        let published = written.and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        match published {
            Ok(()) => {
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                Ok(SecretString::from(password))
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                secret_file::read(path, Whose::Tenantry).map_err(|p| self.file_error(path, &p))
            }
            Err(e) => Err(self.error(format!("cannot write the file: {e}"))),
        }
    }

    /// A new random password, as [`ensure`](Self::ensure) generates them:
    /// [`GENERATED_PASSWORD_LEN`] characters of `[A-Za-z0-9]` from the OS RNG.
    pub fn generate() -> SecretString {
        SecretString::from(random_password())
    }

    /// Replaces the file of a `Generated` source with `password` (rotation),
    /// atomically: written to a temporary file (mode 0600) in the same
    /// directory, synced, renamed over the old file, and the directory
    /// synced. A reader sees the old password or the new one, never a mix;
    /// a crash leaves the old file (and perhaps a stray `.<name>.tmp-*`).
    /// Directories are created 0700 if missing. Env and file sources are
    /// not tenantry's to write: an error.
    pub fn store_generated(&self, password: &SecretString) -> Result<(), ManifestError> {
        use secrecy::ExposeSecret;
        let PasswordSource::Generated { path } = self else {
            return Err(self.error(
                "only a generated password can be replaced by tenantry; change the variable or file yourself",
            ));
        };
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(self.error("the path has no file name"));
        };
        create_private_dir(dir)
            .map_err(|e| self.error(format!("cannot create {}: {e}", dir.display())))?;
        self.private_dir(dir)?;
        let tmp = temp_beside(dir, name);
        let written = create_new_private(&tmp).and_then(|mut file| {
            file.write_all(password.expose_secret().as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.error(format!("cannot write the new password: {e}")));
        }
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// A broken password file as an error: what is wrong and how to fix it.
    fn file_error(&self, path: &Path, problem: &Problem) -> ManifestError {
        let whose = match self {
            PasswordSource::Generated { .. } => Whose::Tenantry,
            _ => Whose::User,
        };
        self.error(format!(
            "the file {}; {}",
            problem.what(),
            problem.help(path, whose)
        ))
    }

    /// The secrets directory is tenantry's own and private (see
    /// `secret_file::private_dir`).
    fn private_dir(&self, dir: &Path) -> Result<(), ManifestError> {
        secret_file::private_dir(dir).map_err(|p| {
            self.error(format!(
                "the secrets directory {} {}; {}",
                dir.display(),
                p.what(),
                p.help(dir, Whose::Tenantry)
            ))
        })
    }

    /// Human text naming the source without the secret:
    /// `env BUILDING_ADMIN_PASSWORD`, `file secrets/building_dev`,
    /// `generated (.tenantry/secrets/building_customer)`. Paths are shown
    /// relative to the current directory when they are under it.
    pub fn describe(&self) -> String {
        match self {
            PasswordSource::Env { var } => format!("env {var}"),
            PasswordSource::File { path } => format!("file {}", display_path(path)),
            PasswordSource::Generated { path } => format!("generated ({})", display_path(path)),
        }
    }

    fn error(&self, reason: impl Into<String>) -> ManifestError {
        let user = match self {
            PasswordSource::Generated { path } => {
                path.file_name().map(|n| n.to_string_lossy().into_owned())
            }
            _ => None,
        };
        ManifestError::Secret {
            user,
            origin: self.describe(),
            reason: reason.into(),
        }
    }
}

/// A new random password, as generated ones are (alphanumeric, for any
/// connection string).
pub fn generate() -> secrecy::SecretString {
    secrecy::SecretString::from(random_password())
}

fn random_password() -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(GENERATED_PASSWORD_LEN)
        .map(char::from)
        .collect()
}

fn display_path(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

/// Creates `dir` and its missing parents with mode 0700 (the secrets
/// directory and whatever tenantry keeps beside its passwords).
#[cfg(unix)]
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// A fresh temporary name in `dir` for a file to become `name`.
fn temp_beside(dir: &Path, name: &std::ffi::OsStr) -> PathBuf {
    dir.join(format!(
        ".{}.tmp-{}-{:08x}",
        name.to_string_lossy(),
        std::process::id(),
        rand::rngs::OsRng.gen::<u32>()
    ))
}

#[cfg(unix)]
fn create_new_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_new_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    /// Writes `text` to `path`, mode 0600 as a password file must be.
    fn write_private(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }

    #[test]
    fn file_source_trims_trailing_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        write_private(&path, "s3cret \n\r\n");
        let src = PasswordSource::File { path: path.clone() };
        assert_eq!(src.load().unwrap().unwrap().expose_secret(), "s3cret ");
        assert_eq!(src.ensure().unwrap().expose_secret(), "s3cret ");

        std::fs::write(&path, "\n").unwrap();
        let err = src.load().unwrap_err().to_string();
        assert!(err.contains("empty") && err.contains("file "), "{err}");
        assert!(!err.contains("s3cret"));
    }

    /// `load` (what the gateway calls per user) applies the file rules:
    /// a directory, a device, two lines, a blank line or (Unix) a file others
    /// can read are errors that name the file and the fix, never the value.
    #[test]
    fn file_source_applies_the_password_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let load = |path: &Path| {
            PasswordSource::File {
                path: path.to_path_buf(),
            }
            .load()
            .unwrap_err()
            .to_string()
        };
        let err = load(dir.path());
        assert!(err.contains("is a directory, not a regular file"), "{err}");
        #[cfg(unix)]
        {
            let err = load(Path::new("/dev/zero"));
            assert!(err.contains("is a device, not a regular file"), "{err}");
        }
        write_private(&path, "root:secret-line\ndaemon:x\n");
        let err = load(&path);
        assert!(err.contains("holds 2 lines"), "{err}");
        assert!(!err.contains("secret-line"), "{err}");
        write_private(&path, " \t \n");
        let err = load(&path);
        assert!(err.contains("only white space"), "{err}");
        write_private(&path, &"x".repeat(5000));
        let err = load(&path);
        assert!(err.contains("5000 bytes"), "{err}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            write_private(&path, "s3cret\n");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = load(&path);
            assert!(
                err.contains("group or others (mode 0644)")
                    && err.contains(&format!("chmod 600 {}", path.display())),
                "{err}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn an_open_secrets_directory_is_made_private_again() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o755)).unwrap();
        let src = PasswordSource::Generated {
            path: secrets.join("u1"),
        };
        assert!(src.load().unwrap().is_none());
        let mode = std::fs::metadata(&secrets).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = PasswordSource::File {
            path: dir.path().join("nope"),
        };
        let err = src.load().unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn env_source_reads_the_process_environment() {
        // A variable name no other test or tool uses.
        let var = "TENANTRY_MANIFEST_TEST_PASSWORD_SOURCE_UNSET_9F3A";
        let src = PasswordSource::Env { var: var.into() };
        let err = src.load().unwrap_err().to_string();
        assert!(err.contains(var) && err.contains("not set"), "{err}");
        assert_eq!(src.describe(), format!("env {var}"));
        // PATH is set in any sane test environment.
        let path = PasswordSource::Env { var: "PATH".into() };
        assert!(path.load().unwrap().is_some());
    }

    #[test]
    fn generated_source_is_written_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets/nested/shop_customer");
        let src = PasswordSource::Generated { path: path.clone() };
        assert!(src.load().unwrap().is_none());

        let first = src.ensure().unwrap();
        let first = first.expose_secret();
        assert_eq!(first.len(), GENERATED_PASSWORD_LEN);
        assert!(first.chars().all(|c| c.is_ascii_alphanumeric()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let dmode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dmode & 0o777, 0o700);
        }

        let second = src.ensure().unwrap();
        assert_eq!(second.expose_secret(), first);
        assert_eq!(src.load().unwrap().unwrap().expose_secret(), first);
    }

    #[test]
    fn store_generated_replaces_the_file_atomically_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets/shop_admin");
        let src = PasswordSource::Generated { path: path.clone() };
        let first = src.ensure().unwrap().expose_secret().to_owned();
        let next = PasswordSource::generate();
        assert_eq!(next.expose_secret().len(), GENERATED_PASSWORD_LEN);
        assert!(next
            .expose_secret()
            .chars()
            .all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(next.expose_secret(), first);
        src.store_generated(&next).unwrap();
        assert_eq!(
            src.load().unwrap().unwrap().expose_secret(),
            next.expose_secret()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("shop_admin")]);
        // Also works before any password was generated.
        let fresh = PasswordSource::Generated {
            path: dir.path().join("other/new_user"),
        };
        fresh.store_generated(&next).unwrap();
        assert_eq!(
            fresh.load().unwrap().unwrap().expose_secret(),
            next.expose_secret()
        );
    }

    #[test]
    fn store_generated_refuses_env_and_file_sources() {
        let env = PasswordSource::Env { var: "X".into() };
        let err = env
            .store_generated(&SecretString::from("pw".to_owned()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("only a generated password"), "{err}");
        let file = PasswordSource::File {
            path: "/nonexistent/pw".into(),
        };
        assert!(file
            .store_generated(&SecretString::from("pw".to_owned()))
            .is_err());
    }

    #[test]
    fn racing_ensures_agree() {
        let dir = tempfile::tempdir().unwrap();
        let src = PasswordSource::Generated {
            path: dir.path().join("racer"),
        };
        let values: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| src.ensure().unwrap().expose_secret().to_owned()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(values.iter().all(|v| v == &values[0]));
    }

    #[test]
    fn describe_names_the_source() {
        let cwd = std::env::current_dir().unwrap();
        let f = PasswordSource::File {
            path: cwd.join("secrets/building_dev"),
        };
        assert_eq!(f.describe(), "file secrets/building_dev");
        let g = PasswordSource::Generated {
            path: cwd.join(".tenantry/secrets/building_customer"),
        };
        assert_eq!(
            g.describe(),
            "generated (.tenantry/secrets/building_customer)"
        );
        let abs = PasswordSource::File {
            path: "/elsewhere/pw".into(),
        };
        assert_eq!(abs.describe(), "file /elsewhere/pw");
    }
}
