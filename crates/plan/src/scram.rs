//! SCRAM-SHA-256 password verifiers, computed client-side.
//!
//! Passwords never reach the server in clear: tenantry sends the verifier
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, RFC 5802/7677, the
//! format Postgres stores in `pg_authid.rolpassword`). To detect password drift
//! without re-setting every password on every run, [`verify`] recomputes a stored
//! verifier from a candidate password with the stored salt and iteration count.
//!
//! The stored verifier is not trusted: any login role may replace its own with
//! `ALTER ROLE .. PASSWORD 'SCRAM-SHA-256$<huge>:...'`, and every superuser
//! `plan` would then spend that many PBKDF2 rounds. Only iteration counts in
//! [`VERIFIABLE_ITERATIONS`] are computed; anything else does not match (the
//! plan shows password drift and apply sets a fresh verifier).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Iterations Postgres itself uses by default (`scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// The iteration counts [`verify`] will compute: from Postgres' default up to
/// about 25 times it, so one check costs at most ~25 default checks. A
/// verifier outside this range (fewer rounds are weaker than the ones
/// tenantry writes; more are a denial of service on `plan`) is drift, fixed
/// by apply with a fresh [`DEFAULT_ITERATIONS`] verifier of the same password.
pub const VERIFIABLE_ITERATIONS: std::ops::RangeInclusive<u32> = DEFAULT_ITERATIONS..=100_000;

/// A fresh verifier for `password` with a random 16-byte salt.
pub fn verifier(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    verifier_with(password, &salt, DEFAULT_ITERATIONS)
}

/// A fresh verifier with `iterations` rounds (the gateway's generated
/// password: `tenantry_layout::roles::GATEWAY_SCRAM_ITERATIONS`).
pub fn verifier_iterations(password: &str, iterations: u32) -> String {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    verifier_with(password, &salt, iterations)
}

/// The verifier for `password` with a given salt and iteration count.
pub fn verifier_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let (stored, server) = keys(password, salt, iterations);
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        B64.encode(salt),
        B64.encode(stored),
        B64.encode(server)
    )
}

/// Whether `stored` (a `rolpassword` value) is a SCRAM verifier of `password`.
/// Anything that is not a well-formed SCRAM-SHA-256 verifier (an md5 hash, a
/// clear-text password, garbage) or whose iteration count is outside
/// [`VERIFIABLE_ITERATIONS`] does not match, and costs no PBKDF2 round.
pub fn verify(password: &str, stored: &str) -> bool {
    verify_within(password, stored, &VERIFIABLE_ITERATIONS)
}

/// [`verify`] for a verifier whose iteration count must be in `allowed`
/// (exactly `n..=n` for the gateway's login: any other count is drift).
pub fn verify_within(
    password: &str,
    stored: &str,
    allowed: &std::ops::RangeInclusive<u32>,
) -> bool {
    let Some(parts) = parse(stored).filter(|p| allowed.contains(&p.iterations)) else {
        return false;
    };
    let (stored_key, server_key) = keys(password, &parts.salt, parts.iterations);
    // Compare both keys; timing does not matter here (the verifier is ours already).
    stored_key.as_slice() == parts.stored_key.as_slice()
        && server_key.as_slice() == parts.server_key.as_slice()
}

struct Parts {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

fn parse(stored: &str) -> Option<Parts> {
    let rest = stored.strip_prefix("SCRAM-SHA-256$")?;
    let (params, keys) = rest.split_once('$')?;
    let (iterations, salt) = params.split_once(':')?;
    let (stored_key, server_key) = keys.split_once(':')?;
    let iterations: u32 = iterations
        .parse()
        .ok()
        .filter(|i| *i >= 1 && *i <= *VERIFIABLE_ITERATIONS.end())?;
    Some(Parts {
        iterations,
        salt: B64.decode(salt).ok()?,
        stored_key: B64.decode(stored_key).ok()?,
        server_key: B64.decode(server_key).ok()?,
    })
}

fn keys(password: &str, salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    // Postgres SASLprep-normalises the password and falls back to the raw bytes
    // when normalisation fails; do the same so verifiers match the server's.
    let prepared = stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.to_owned());
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), salt, iterations, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let server_key = hmac(&salted, b"Server Key");
    (stored_key, server_key)
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_verifier_round_trips() {
        let v = verifier("correct horse");
        assert!(v.starts_with("SCRAM-SHA-256$4096:"));
        assert!(verify("correct horse", &v));
        assert!(!verify("correct horsE", &v));
    }

    #[test]
    fn salts_differ_but_both_verify() {
        let (a, b) = (verifier("pw"), verifier("pw"));
        assert_ne!(a, b, "random salts");
        assert!(verify("pw", &a) && verify("pw", &b));
    }

    #[test]
    fn matches_postgres_protocol_crate() {
        // postgres-protocol computes verifiers the way libpq does; ours must agree.
        let theirs = postgres_protocol::password::scram_sha_256(b"s3cr\xc3\xa9t");
        assert!(verify("s3cr\u{e9}t", &theirs));
        assert!(!verify("secret", &theirs));
    }

    #[test]
    fn other_iteration_counts_are_honoured() {
        let v = verifier_with("pw", b"0123456789abcdef", 10_000);
        assert!(v.starts_with("SCRAM-SHA-256$10000:"));
        assert!(verify("pw", &v));
    }

    #[test]
    fn iteration_counts_outside_the_verifiable_range_never_match() {
        // Well-formed verifiers of the right password: only the count is wrong.
        let salt = b"0123456789abcdef";
        for iterations in [*VERIFIABLE_ITERATIONS.start(), *VERIFIABLE_ITERATIONS.end()] {
            assert!(verify("pw", &verifier_with("pw", salt, iterations)));
        }
        for iterations in [
            1,
            *VERIFIABLE_ITERATIONS.start() - 1,
            *VERIFIABLE_ITERATIONS.end() + 1,
        ] {
            let v = verifier_with("pw", salt, iterations);
            assert!(!verify("pw", &v), "{iterations} rounds verified");
        }
    }

    #[test]
    fn the_gateway_login_verifies_only_at_its_own_count() {
        let only = 16..=16;
        let v = verifier_iterations("generated", 16);
        assert!(v.starts_with("SCRAM-SHA-256$16:"));
        assert!(verify_within("generated", &v, &only));
        assert!(
            !verify("generated", &v),
            "a user's verifier needs 4096 rounds"
        );
        assert!(!verify_within("generated", &verifier("generated"), &only));
    }

    #[test]
    fn a_hostile_iteration_count_is_refused_without_computing() {
        // u32::MAX rounds take hours: a verify that computes them misses the deadline.
        let hostile = format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            u32::MAX,
            B64.encode(b"0123456789abcdef"),
            B64.encode([0u8; 32]),
            B64.encode([0u8; 32])
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(verify("pw", &hostile)));
        let matched = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("verify returned at once instead of computing u32::MAX rounds");
        assert!(!matched);
    }

    #[test]
    fn non_scram_values_never_match() {
        for stored in [
            "md5abc",
            "pw",
            "",
            "SCRAM-SHA-256$x:y$z:w",
            "SCRAM-SHA-256$0:AA==$AA==:AA==",
        ] {
            assert!(!verify("pw", stored), "{stored}");
        }
    }
}
