//! PostgreSQL duration text (`"5s"`, `"500ms"`, `"2min"`, `"0"`) to and from
//! milliseconds, as used by `statement_timeout`.

/// Parses a Postgres duration into milliseconds.
///
/// Accepts an integer followed by an optional unit `us`, `ms`, `s`, `min`,
/// `h` or `d` (spaces around the number and unit are allowed). A bare integer
/// means milliseconds, as Postgres does for `statement_timeout`; microseconds
/// are rounded up to whole milliseconds. Returns `None` for anything else,
/// including negative values and values that overflow.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let value: u64 = s[..digits].parse().ok()?;
    match s[digits..].trim_start() {
        "" | "ms" => Some(value),
        "us" => Some(value.div_ceil(1000)),
        "s" => value.checked_mul(1000),
        "min" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        "d" => value.checked_mul(86_400_000),
        _ => None,
    }
}

/// Canonical Postgres text for a duration in milliseconds: `"0"`, or the
/// value in the largest unit among ms, s, min, h, d that divides it exactly.
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0".into();
    }
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "min"),
        (1000, "s"),
    ];
    for (size, unit) in UNITS {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postgres_durations() {
        assert_eq!(parse_duration_ms("0"), Some(0));
        assert_eq!(parse_duration_ms("500"), Some(500));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("5s"), Some(5000));
        assert_eq!(parse_duration_ms("2min"), Some(120_000));
        assert_eq!(parse_duration_ms("1h"), Some(3_600_000));
        assert_eq!(parse_duration_ms("1d"), Some(86_400_000));
        assert_eq!(parse_duration_ms("250us"), Some(1));
        assert_eq!(parse_duration_ms("1001us"), Some(2));
        assert_eq!(parse_duration_ms("0us"), Some(0));
        assert_eq!(parse_duration_ms(" 5 s "), Some(5000));
    }

    #[test]
    fn rejects_other_text() {
        for bad in [
            "",
            "s",
            "-5s",
            "5sec",
            "1.5s",
            "5 m",
            "5S",
            "abc",
            "5s5",
            "99999999999999999999",
        ] {
            assert_eq!(parse_duration_ms(bad), None, "{bad:?}");
        }
        assert_eq!(parse_duration_ms("18446744073709551615d"), None);
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(format_duration_ms(0), "0");
        assert_eq!(format_duration_ms(500), "500ms");
        assert_eq!(format_duration_ms(1500), "1500ms");
        assert_eq!(format_duration_ms(5000), "5s");
        assert_eq!(format_duration_ms(90_000), "90s");
        assert_eq!(format_duration_ms(120_000), "2min");
        assert_eq!(format_duration_ms(3_600_000), "1h");
        assert_eq!(format_duration_ms(5_400_000), "90min");
        assert_eq!(format_duration_ms(86_400_000), "1d");
        assert_eq!(format_duration_ms(172_800_000), "2d");
        for ms in [1, 999, 1000, 61_000, 7_200_000, 86_400_000] {
            assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Some(ms));
        }
    }
}
