//! The shape of host names the gateway routes by: DNS labels (subdomains)
//! and lower-case host names (custom domains), with why one is not.

/// A DNS label: a-z, 0-9 and '-', 1 to 63 characters, no leading or trailing '-'.
pub(super) fn check_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.len() > 63 {
        return Err(format!(
            "it is {} characters long; at most 63 are allowed",
            s.len()
        ));
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        let hint = if bad.is_ascii_uppercase() {
            " (use lower case)"
        } else {
            ""
        };
        return Err(format!(
            "it contains {bad:?}; only a-z, 0-9 and '-' are allowed{hint}"
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("it starts or ends with '-'".into());
    }
    Ok(())
}

/// A lower-case host name: dot-separated DNS labels, at most 253 characters.
pub(super) fn check_hostname(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.len() > 253 {
        return Err(format!(
            "it is {} characters long; at most 253 are allowed",
            s.len()
        ));
    }
    if s.ends_with('.') {
        return Err("it ends with '.'; remove the trailing dot".into());
    }
    for label in s.split('.') {
        check_label(label).map_err(|why| format!("label {label:?}: {why}"))?;
    }
    Ok(())
}
