//! [`HostIndex`]: which tenant a request is for, from its `Host` header (or a
//! trusted `X-Tenant` header). Pure: built once per configuration snapshot
//! from the [`Inventory`], looked up with no I/O.
//!
//! What does not live here: whether the tenant is suspended, whether the
//! `X-Tenant` header may be trusted (`routing.trust_tenant_header`), pools.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use tenantry_manifest::Inventory;

/// Host -> tenant, built once per configuration snapshot (no database round trip).
#[derive(Clone, Debug, Default)]
pub struct HostIndex {
    /// Tenant database names; the maps below hold indexes into it.
    names: Vec<String>,
    by_name: HashMap<String, usize>,
    by_subdomain: HashMap<String, usize>,
    by_domain: HashMap<String, usize>,
    /// Lower-case, no trailing dot; longest first, so a more specific base
    /// domain (`eu.usualstore.com`) is tried before `usualstore.com`.
    base_domains: Vec<String>,
    reserved: HashSet<String>,
}

impl HostIndex {
    pub fn build(inventory: &Inventory) -> HostIndex {
        let mut index = HostIndex::default();
        for tenant in &inventory.tenants {
            let i = index.names.len();
            let name = tenant.name.to_string();
            index.by_name.insert(name.clone(), i);
            index.by_subdomain.insert(normalise(&tenant.subdomain), i);
            for d in &tenant.domains {
                index.by_domain.insert(normalise(d), i);
            }
            index.names.push(name);
        }
        index.base_domains = inventory
            .routing
            .base_domains
            .iter()
            .map(|d| normalise(d))
            .collect();
        index
            .base_domains
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        index.reserved = inventory
            .routing
            .reserved_subdomains
            .iter()
            .map(|s| normalise(s))
            .collect();
        index
    }

    /// The tenant (database name) a Host header names, if any. Normalise:
    /// strip the port (also for `[::1]:4001`), lower-case, drop one trailing
    /// dot. An exact match with any tenant's `domains` wins; else exactly one
    /// label in front of one of `routing.base_domains` that is a tenant's
    /// `subdomain`. Reserved subdomains, bare base domains, IP addresses (v4
    /// or v6) and deeper names (`a.b.usualstore.com`) resolve to None.
    pub fn resolve(&self, host: &str) -> Option<&str> {
        let host = host_name(host)?;
        if let Some(&i) = self.by_domain.get(&host) {
            return Some(&self.names[i]);
        }
        for base in &self.base_domains {
            let Some(label) = host
                .strip_suffix(base.as_str())
                .and_then(|rest| rest.strip_suffix('.'))
            else {
                continue;
            };
            if label.is_empty() || label.contains('.') || self.reserved.contains(label) {
                continue;
            }
            if let Some(&i) = self.by_subdomain.get(label) {
                return Some(&self.names[i]);
            }
        }
        None
    }

    /// For `X-Tenant` (only used when routing.trust_tenant_header): the value
    /// is a tenant database name or subdomain (case-insensitive, surrounding
    /// white space ignored).
    pub fn by_name(&self, value: &str) -> Option<&str> {
        let value = value.trim().to_ascii_lowercase();
        let i = self
            .by_name
            .get(&value)
            .or_else(|| self.by_subdomain.get(&value))?;
        Some(&self.names[*i])
    }

    /// How many tenants the index holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Lower-case, without one trailing dot.
fn normalise(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match lower.strip_suffix('.') {
        Some(s) => s.to_owned(),
        None => lower,
    }
}

/// The host name of a `Host` header value: port stripped, normalised.
/// None for IP literals, empty names and malformed values.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    if host.starts_with('[') {
        // `[v6]` or `[v6]:port`: an IP literal, never a tenant.
        return None;
    }
    let name = match host.split_once(':') {
        None => host,
        Some((name, port)) => {
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                // A second colon (a bare IPv6 address) or a bad port.
                return None;
            }
            name
        }
    };
    let name = normalise(name);
    if name.is_empty() || name.starts_with('.') || name.ends_with('.') {
        return None;
    }
    if name.parse::<Ipv4Addr>().is_ok() {
        return None;
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const TOML: &str = r#"
        [routing]
        base_domains = ["usualstore.com", "localhost"]
        reserved_subdomains = ["www", "api", "admin"]

        [plans.starter]
        connection_limit = 5
        statement_timeout = "5s"
        pool_size = 2
        requests_per_second = 20

        [tenants.building_shop]
        plan = "starter"
        subdomain = "building"
        domains = ["shop.building.example"]

        [tenants.hardware_store]
        plan = "starter"
    "#;

    fn index() -> HostIndex {
        let inv = Inventory::from_str_with(TOML, Path::new("/tmp/tenants.toml"), &|_| None)
            .expect("test inventory is valid");
        HostIndex::build(&inv)
    }

    #[test]
    fn subdomain_of_a_base_domain() {
        let ix = index();
        assert_eq!(ix.len(), 2);
        assert!(!ix.is_empty());
        assert_eq!(ix.resolve("building.usualstore.com"), Some("building_shop"));
        assert_eq!(ix.resolve("building.localhost"), Some("building_shop"));
        assert_eq!(ix.resolve("building.localhost:4001"), Some("building_shop"));
        // The subdomain derived from the name.
        assert_eq!(
            ix.resolve("hardware-store.usualstore.com"),
            Some("hardware_store")
        );
    }

    #[test]
    fn normalises_case_port_and_trailing_dot() {
        let ix = index();
        assert_eq!(
            ix.resolve("BUILDING.usualstore.com.:4001"),
            Some("building_shop")
        );
        assert_eq!(ix.resolve("Building.UsualStore.COM"), Some("building_shop"));
        assert_eq!(
            ix.resolve("building.usualstore.com."),
            Some("building_shop")
        );
        // Only one trailing dot is dropped.
        assert_eq!(ix.resolve("building.usualstore.com.."), None);
        // A port must be digits.
        assert_eq!(ix.resolve("building.usualstore.com:http"), None);
        assert_eq!(ix.resolve("building.usualstore.com:"), None);
    }

    #[test]
    fn custom_domain_matches_exactly() {
        let ix = index();
        assert_eq!(ix.resolve("shop.building.example"), Some("building_shop"));
        assert_eq!(
            ix.resolve("SHOP.building.example.:443"),
            Some("building_shop")
        );
        assert_eq!(ix.resolve("x.shop.building.example"), None);
        assert_eq!(ix.resolve("building.example"), None);
    }

    #[test]
    fn reserved_bare_deeper_and_unknown_names_resolve_to_none() {
        let ix = index();
        for host in [
            "www.usualstore.com",
            "api.localhost:4001",
            "usualstore.com",
            "localhost:4001",
            "a.building.usualstore.com",
            "nosuch.usualstore.com",
            "building.example.org",
            "building",
            ".usualstore.com",
            "",
            ":4001",
        ] {
            assert_eq!(ix.resolve(host), None, "{host:?}");
        }
    }

    #[test]
    fn ip_addresses_resolve_to_none() {
        let ix = index();
        for host in [
            "127.0.0.1",
            "127.0.0.1:4001",
            "[::1]",
            "[::1]:4001",
            "::1",
            "fe80::1",
        ] {
            assert_eq!(ix.resolve(host), None, "{host:?}");
        }
    }

    #[test]
    fn more_specific_base_domain_wins() {
        let toml = r#"
            [routing]
            base_domains = ["usualstore.com", "eu.usualstore.com"]
            [plans.p]
            connection_limit = 5
            statement_timeout = "5s"
            pool_size = 2
            requests_per_second = 20
            [tenants.shop]
            plan = "p"
        "#;
        let inv = Inventory::from_str_with(toml, Path::new("/tmp/tenants.toml"), &|_| None)
            .expect("valid");
        let ix = HostIndex::build(&inv);
        assert_eq!(ix.resolve("shop.eu.usualstore.com"), Some("shop"));
        assert_eq!(ix.resolve("shop.usualstore.com"), Some("shop"));
        assert_eq!(ix.resolve("shop.x.usualstore.com"), None);
    }

    #[test]
    fn x_tenant_by_name_or_subdomain() {
        let ix = index();
        assert_eq!(ix.by_name("building_shop"), Some("building_shop"));
        assert_eq!(ix.by_name("building"), Some("building_shop"));
        assert_eq!(ix.by_name(" Hardware-Store "), Some("hardware_store"));
        assert_eq!(ix.by_name("hardware_store"), Some("hardware_store"));
        assert_eq!(ix.by_name("shop.building.example"), None);
        assert_eq!(ix.by_name("nosuch"), None);
        assert_eq!(ix.by_name(""), None);
    }

    #[test]
    fn empty_inventory() {
        let inv =
            Inventory::from_str_with("[tenants]\n", Path::new("/tmp/tenants.toml"), &|_| None)
                .expect("an inventory with no tenants is valid (an empty file is not)");
        let ix = HostIndex::build(&inv);
        assert!(ix.is_empty());
        assert_eq!(ix.resolve("building.localhost"), None);
    }
}
