//! Errors of this crate: [`ManifestError`] and the [`Diagnostic`] it carries
//! for every problem found in a `tenants.toml`.
//!
//! A diagnostic says where (file:line:column), what is wrong and, when there
//! is an obvious fix, how to fix it. Nothing here ever holds a secret value:
//! password problems name the user and the *source* of the password only.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while loading an inventory or a password.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest file could not be read. The I/O error is part of the
    /// message, with a `help:` line on what to do; it is not also chained as
    /// a `source`, so a report that prints the chain says it once.
    #[error("cannot read {}: {error}{}", .path.display(), read_help(.path, .error))]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The manifest is invalid; holds every problem found, in file order.
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
    /// A command that works on one server was given a file that names
    /// several.
    #[error(
        "{} names {} servers ({}), and this command works on one server only\nhelp: several servers are not supported by this command yet; run it with a file of one [server]",
        .path.display(), .names.len(), .names.join(", ")
    )]
    SeveralServers { path: PathBuf, names: Vec<String> },
    /// A password could not be read or generated. Names the user (when known)
    /// and where the password comes from, never the value.
    #[error("{}", secret_message(.user, .origin, .reason))]
    Secret {
        /// The user the password belongs to, when known.
        user: Option<String>,
        /// The password source, as given by [`crate::PasswordSource::describe`].
        origin: String,
        /// What went wrong.
        reason: String,
    },
}

impl ManifestError {
    /// The diagnostics of an [`ManifestError::Invalid`] error; empty otherwise.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ManifestError::Invalid(d) => d,
            _ => &[],
        }
    }

    /// Names the user in a [`ManifestError::Secret`] error that does not yet.
    pub(crate) fn for_user(self, name: &str) -> Self {
        match self {
            ManifestError::Secret {
                user: None,
                origin,
                reason,
            } => ManifestError::Secret {
                user: Some(name.to_owned()),
                origin,
                reason,
            },
            other => other,
        }
    }
}

/// The `help:` line of [`ManifestError::Read`], with its leading newline.
fn read_help(path: &Path, error: &std::io::Error) -> String {
    let help = match error.kind() {
        std::io::ErrorKind::NotFound => {
            let looked = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
            format!(
                "looked for {}; pass --config <path> to use another file, or create it: start from the example tenants.toml, or convert a Terraform tenants.tfvars with `tenantry import-tfvars <file>`",
                looked.display()
            )
        }
        std::io::ErrorKind::PermissionDenied => {
            "check the permissions of the file and of the directories above it".to_owned()
        }
        _ if path.is_dir() => format!(
            "that is a directory: pass the file itself, e.g. --config {}",
            path.join("tenants.toml").display()
        ),
        _ => return String::new(),
    };
    format!("\n  help: {help}")
}

fn secret_message(user: &Option<String>, origin: &str, reason: &str) -> String {
    match user {
        Some(u) => format!("password of user `{u}` ({origin}): {reason}"),
        None => format!("password ({origin}): {reason}"),
    }
}

/// Renders diagnostics one block per problem, separated by newlines.
pub fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One problem in a manifest, with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The manifest path as given.
    pub file: PathBuf,
    /// 1-based line; 0 if unknown.
    pub line: usize,
    /// 1-based column (in characters); 0 if unknown.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    /// `tenants.toml:12:5: <message>` then, if any, `\n  help: <help>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// 1-based (line, column) of a byte offset in `source`; the column counts
/// characters. Offsets past the end clamp to the end.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Builds diagnostics for one source file: the one place a byte span
/// becomes `file:line:column`, for the manifest's validator and for other
/// readers that report like it (the Terraform importer, `tenantry-tfvars`).
pub struct Reporter<'a> {
    source: &'a str,
    file: &'a Path,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    /// A reporter for `source`, read from `file`, with no diagnostics yet.
    pub fn new(source: &'a str, file: &'a Path) -> Self {
        Reporter {
            source,
            file,
            diagnostics: Vec::new(),
        }
    }

    /// A diagnostic at the start of `span` (or 0:0 for `None`).
    pub fn diagnostic(
        &self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> Diagnostic {
        let (line, column) = span.map_or((0, 0), |s| line_col(self.source, s.start));
        Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
            help,
        }
    }

    /// Records a problem at `span` with help text.
    pub fn error_help(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let d = self.diagnostic(Some(span), message, Some(help.into()));
        self.diagnostics.push(d);
    }

    /// Records a problem at `span`, or at no position for `None`, with help
    /// text.
    pub(crate) fn error_at(
        &mut self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let d = self.diagnostic(span, message, Some(help.into()));
        self.diagnostics.push(d);
    }

    /// `file:line:column` of a span, to point at an earlier occurrence.
    pub fn location(&self, span: &Range<usize>) -> String {
        let (line, column) = line_col(self.source, span.start);
        format!("{}:{line}:{column}", self.file.display())
    }

    /// The problems recorded, in the order they were found.
    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diagnostics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let s = "ab\ncdé\nf";
        assert_eq!(line_col(s, 0), (1, 1));
        assert_eq!(line_col(s, 1), (1, 2));
        assert_eq!(line_col(s, 3), (2, 1));
        assert_eq!(line_col(s, 8), (3, 1));
        assert_eq!(line_col(s, 7), (2, 4));
        assert_eq!(line_col(s, 100), (3, 2));
    }

    #[test]
    fn diagnostic_display() {
        let d = Diagnostic {
            file: "tenants.toml".into(),
            line: 12,
            column: 5,
            message: "bad".into(),
            help: Some("fix it".into()),
        };
        assert_eq!(d.to_string(), "tenants.toml:12:5: bad\n  help: fix it");
        let e = ManifestError::Invalid(vec![d.clone(), d]);
        assert_eq!(
            e.to_string(),
            "tenants.toml:12:5: bad\n  help: fix it\ntenants.toml:12:5: bad\n  help: fix it"
        );
    }

    #[test]
    fn secret_error_names_user_and_origin() {
        let e = ManifestError::Secret {
            user: None,
            origin: "env X".into(),
            reason: "not set".into(),
        }
        .for_user("bob");
        assert_eq!(e.to_string(), "password of user `bob` (env X): not set");
    }
}
