//! Names in SQL: [`Ident`], a validated lower-case PostgreSQL identifier
//! (database or role name), and the only quoting functions tenantry uses:
//! [`quote`] for identifiers, [`literal`] for string values. Holding an
//! `Ident` proves the name is safe to put in SQL once quoted; every other
//! string (a name read from the catalog) is quoted too, so quoting never
//! relies on validation. Nothing here talks to a server.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

/// Maximum identifier length in PostgreSQL (NAMEDATALEN - 1), in bytes.
pub const MAX_IDENT_BYTES: usize = 63;

/// A validated lower-case Postgres identifier: `^[a-z_][a-z0-9_]*$`, at most
/// 63 bytes, and not reserved (`postgres`, `template0`, `template1`, or
/// anything starting with `pg_`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize)]
#[serde(transparent)]
pub struct Ident(String);

impl Ident {
    /// Validates `s`; the error is a human reason, without the name itself.
    pub fn parse(s: &str) -> Result<Ident, String> {
        if s.is_empty() {
            return Err("it is empty".into());
        }
        if s.len() > MAX_IDENT_BYTES {
            return Err(format!(
                "it is {} bytes long; PostgreSQL names are at most {MAX_IDENT_BYTES} bytes",
                s.len()
            ));
        }
        let first = s.chars().next().unwrap_or('\0');
        if !(first.is_ascii_lowercase() || first == '_') {
            return Err(format!(
                "it starts with {first:?}; names must start with a lower-case letter (a-z) or '_'"
            ));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
        {
            let hint = if bad.is_ascii_uppercase() {
                " (upper case is not allowed: use lower case)"
            } else {
                ""
            };
            return Err(format!(
                "it contains {bad:?}; only a-z, 0-9 and '_' are allowed{hint}"
            ));
        }
        if matches!(s, "postgres" | "template0" | "template1") {
            return Err(format!("`{s}` is reserved by PostgreSQL"));
        }
        if s.starts_with("pg_") {
            return Err("names starting with `pg_` are reserved by PostgreSQL".into());
        }
        Ok(Ident(s.to_owned()))
    }

    /// Builds an identifier the caller has already proven valid.
    pub(crate) fn new_unchecked(s: String) -> Ident {
        debug_assert!(Ident::parse(&s).is_ok(), "invalid identifier {s:?}");
        Ident(s)
    }

    /// The bare name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name for SQL, through [`quote`].
    pub fn quoted(&self) -> String {
        quote(&self.0)
    }
}

/// A double-quoted identifier, any inner `"` doubled: safe in SQL whatever
/// the name holds (a validated [`Ident`] has no `"`, but quoting does not
/// rely on that).
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A comma-separated list of quoted identifiers.
pub fn idents<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    names
        .into_iter()
        .map(|n| quote(n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A single-quoted string literal (standard_conforming_strings), quotes
/// doubled. Backslashes are safe as they are; NUL cannot reach PostgreSQL.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Deref for Ident {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Ident {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Ident {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Ident {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<Ident> for String {
    fn eq(&self, other: &Ident) -> bool {
        *self == other.0
    }
}

impl PartialEq<Ident> for str {
    fn eq(&self, other: &Ident) -> bool {
        self == other.0
    }
}

impl From<Ident> for String {
    fn from(i: Ident) -> String {
        i.0
    }
}

impl PartialEq<&str> for Ident {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lower_case_identifiers() {
        for ok in ["a", "_x", "building_shop", "shop2", &"a".repeat(63)] {
            assert_eq!(Ident::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_bad_identifiers() {
        let cases = [
            ("", "empty"),
            ("Shop", "start with a lower-case"),
            ("shOp", "upper case"),
            ("1shop", "start with"),
            ("shop-1", "only a-z"),
            ("shop\"; DROP DATABASE x; --", "only a-z"),
            ("postgres", "reserved"),
            ("template0", "reserved"),
            ("template1", "reserved"),
            ("pg_shop", "reserved"),
        ];
        for (bad, why) in cases {
            let err = Ident::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(Ident::parse(&"a".repeat(64))
            .unwrap_err()
            .contains("64 bytes"));
    }

    #[test]
    fn quoting_neutralises_injection() {
        assert_eq!(quote("shop"), "\"shop\"");
        assert_eq!(
            quote("shop\"; DROP DATABASE x; --"),
            "\"shop\"\"; DROP DATABASE x; --\""
        );
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(idents(["a", "b"]), "\"a\", \"b\"");
    }

    #[test]
    fn quoting_and_traits() {
        let i = Ident::parse("shop").unwrap();
        assert_eq!(i.quoted(), "\"shop\"");
        assert_eq!(Ident("a\"b".into()).quoted(), "\"a\"\"b\"");
        assert_eq!(i.to_string(), "shop");
        assert_eq!(i.len(), 4);
        assert_eq!(i, "shop");
        let set: std::collections::BTreeSet<Ident> = [i.clone()].into();
        assert!(set.contains("shop"));
    }
}
