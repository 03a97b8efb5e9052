//! The names a move between servers gives the objects it makes and
//! removes again: one name for the publication (old server, in the tenant's
//! database), the replication slot and the temporary login the new server
//! streams through (old server, cluster-wide), and the subscription (new
//! server, in the tenant's database); and the channel tenantry notifies
//! when a tenant's home changes. Where a move stands is kept in the
//! database markers ([`crate::marker::Move`]); what a move does is
//! `tenantry-pg`'s `moves`.

use sha2::{Digest, Sha256};

/// The `NOTIFY` channel, in each server's admin database, that says a
/// tenant's copies changed (a cutover starts or ends); the payload is
/// `<fleet> <tenant>`. Gateways listen on it to re-read where tenants live.
pub const CHANNEL: &str = "tenantry_moves";

/// The publication, slot, subscription and temporary login of a move of
/// `tenant` of `fleet`: `tenantry_move_` and 16 hex digits of a digest, so
/// it is a valid slot name (lowercase, digits, `_`) whatever the tenant's
/// name, the same in every run (a resumed move finds what an earlier one
/// made), and different for every tenant of every fleet.
pub fn replication_name(fleet: &str, tenant: &str) -> String {
    let digest = Sha256::digest(format!("{fleet}\0{tenant}").as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("tenantry_move_{hex}")
}

/// The payload of a [`CHANNEL`] notification about `tenant`.
pub fn payload(fleet: &str, tenant: &str) -> String {
    format!("{fleet} {tenant}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_names_are_valid_slot_names_and_distinct() {
        let a = replication_name("prod", "shop");
        assert_eq!(a, replication_name("prod", "shop"));
        assert_ne!(a, replication_name("prod", "shop2"));
        assert_ne!(a, replication_name("staging", "shop"));
        assert_eq!(a.len(), "tenantry_move_".len() + 16);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
    }
}
