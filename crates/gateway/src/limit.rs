//! Request rate limits (GCRA, from `governor`):
//! - [`Limits`]: per tenant, with its plan's `requests_per_second` and a burst
//!   of the same size. Only authenticated requests spend it, so nobody
//!   without a token can lock a tenant's users out;
//! - [`AddressLimits`]: per client address, for requests that are not (yet)
//!   authenticated: no token, a bad one, or one the gateway has not seen (each
//!   of those costs a lookup in the tenant's database).
//!
//! What does not live here: the plan lookup (the caller passes the rate from
//! its snapshot) and the HTTP 429 answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// One rate limiter per tenant, created on the tenant's first request.
pub struct Limits {
    tenants: RwLock<HashMap<String, Limiter>>,
    clock: DefaultClock,
}

#[derive(Clone)]
struct Limiter {
    per_second: u32,
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::new()
    }
}

impl Limits {
    pub fn new() -> Limits {
        Limits {
            tenants: RwLock::default(),
            clock: DefaultClock::default(),
        }
    }

    /// Ok, or Err(retry_after) when the tenant exceeded `per_second` (burst =
    /// `per_second`; 0 is taken as 1). Re-creates the tenant's limiter when
    /// `per_second` changed (plan change), which starts it with a full burst.
    pub fn check(&self, tenant: &str, per_second: u32) -> Result<(), Duration> {
        let limiter = self.limiter(tenant, per_second);
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets a tenant (removed from the configuration).
    pub fn remove(&self, tenant: &str) {
        self.tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tenant);
    }

    fn limiter(&self, tenant: &str, per_second: u32) -> Arc<DefaultDirectRateLimiter> {
        let per_second = per_second.max(1);
        {
            let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
            if let Some(l) = tenants.get(tenant) {
                if l.per_second == per_second {
                    return l.limiter.clone();
                }
            }
        }
        let mut tenants = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        // Another request may have made it meanwhile.
        if let Some(l) = tenants.get(tenant) {
            if l.per_second == per_second {
                return l.limiter.clone();
            }
        }
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let limiter = Arc::new(RateLimiter::direct_with_clock(
            Quota::per_second(rate),
            self.clock.clone(),
        ));
        tenants.insert(
            tenant.to_owned(),
            Limiter {
                per_second,
                limiter: limiter.clone(),
            },
        );
        limiter
    }
}

/// Unauthenticated requests per client address: `per_second`, with a burst
/// of twice that. IPv6 clients are keyed by their /64 (one host usually
/// holds the whole prefix).
///
/// A lookup of a token the gateway has not seen is refused only while its
/// address is over the limit, and spends the budget only if the token turns
/// out bad: users behind one NAT or load balancer address, whose tokens are
/// good, do not use up each other's budget.
pub struct AddressLimits {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    /// Addresses over the limit, until when.
    blocked: RwLock<HashMap<IpAddr, std::time::Instant>>,
}

impl AddressLimits {
    pub fn new(per_second: u32) -> AddressLimits {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 > 0"));
        let clock = DefaultClock::default();
        AddressLimits {
            limiter: RateLimiter::dashmap_with_clock(
                Quota::per_second(rate).allow_burst(burst),
                clock.clone(),
            ),
            clock,
            blocked: RwLock::default(),
        }
    }

    /// Spends one unit of `addr`'s budget: Ok, or Err(retry_after) when it
    /// exceeded its rate.
    pub fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        let key = key(addr);
        self.limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            self.blocked
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, std::time::Instant::now() + wait);
            wait
        })
    }

    /// Err(retry_after) while `addr` is over its limit (spends nothing).
    pub fn blocked(&self, addr: IpAddr) -> Result<(), Duration> {
        let blocked = self.blocked.read().unwrap_or_else(|e| e.into_inner());
        match blocked.get(&key(addr)) {
            Some(until) => match until.checked_duration_since(std::time::Instant::now()) {
                Some(wait) if !wait.is_zero() => Err(wait),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Forgets addresses whose state is back to a full burst (call on a timer:
    /// keeps memory bounded by the addresses seen in the last seconds).
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let now = std::time::Instant::now();
        self.blocked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, until| *until > now);
    }

    /// Addresses currently tracked.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// IPv4 (and IPv4-mapped IPv6) as is; other IPv6 addresses by their /64.
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(limits: &Limits, tenant: &str, per_second: u32, n: usize) -> usize {
        (0..n)
            .filter(|_| limits.check(tenant, per_second).is_ok())
            .count()
    }

    #[test]
    fn a_burst_of_the_rate_then_rejections_with_a_retry_after() {
        let limits = Limits::new();
        assert_eq!(allowed(&limits, "shop", 20, 20), 20);
        let retry_after = limits.check("shop", 20).unwrap_err();
        assert!(retry_after > Duration::ZERO, "{retry_after:?}");
        assert!(retry_after <= Duration::from_millis(50), "{retry_after:?}");
    }

    #[test]
    fn tenants_are_limited_separately() {
        let limits = Limits::new();
        assert_eq!(allowed(&limits, "shop", 20, 25), 20);
        assert_eq!(allowed(&limits, "cafe", 20, 20), 20);
        assert!(limits.check("shop", 20).is_err());
    }

    #[test]
    fn a_changed_rate_applies_at_once() {
        let limits = Limits::new();
        assert_eq!(allowed(&limits, "shop", 5, 10), 5);
        // Upgraded: a fresh limiter with the larger burst.
        assert_eq!(allowed(&limits, "shop", 8, 12), 8);
        // Downgraded.
        assert_eq!(allowed(&limits, "shop", 2, 10), 2);
    }

    #[test]
    fn a_removed_tenant_starts_afresh() {
        let limits = Limits::new();
        assert_eq!(allowed(&limits, "shop", 3, 5), 3);
        limits.remove("shop");
        assert_eq!(allowed(&limits, "shop", 3, 5), 3);
    }

    #[test]
    fn tokens_come_back_over_time() {
        let limits = Limits::new();
        assert_eq!(allowed(&limits, "shop", 100, 100), 100);
        let retry_after = limits.check("shop", 100).unwrap_err();
        std::thread::sleep(retry_after + Duration::from_millis(5));
        assert!(limits.check("shop", 100).is_ok());
    }

    #[test]
    fn addresses_are_limited_apart_and_ipv6_by_its_64() {
        let limits = AddressLimits::new(5);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let burst = (0..20).filter(|_| limits.check(a).is_ok()).count();
        assert_eq!(burst, 10, "burst is twice the rate");
        assert!(limits.check(a).unwrap_err() > Duration::ZERO);
        assert!(limits.blocked(a).is_err(), "over the limit: blocked");
        assert!(limits.check(b).is_ok(), "another address is not affected");
        assert!(limits.blocked(b).is_ok(), "blocked() spends nothing");
        // Two addresses in one /64 share a budget; another /64 does not.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let spent = (0..10)
            .filter(|i| limits.check(v6(&format!("2001:db8:0:1::{i:x}"))).is_ok())
            .count();
        assert_eq!(spent, 10);
        assert!(limits.check(v6("2001:db8:0:1:ffff::1")).is_err());
        assert!(limits.check(v6("2001:db8:0:2::1")).is_ok());
        // IPv4-mapped IPv6 is the IPv4 address.
        assert!(limits.check(v6("::ffff:192.0.2.1")).is_err());
        assert_eq!(limits.len(), 4);
    }
}
