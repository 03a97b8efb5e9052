//! [`Limits`]: per-tenant request rate limits (GCRA, from `governor`), each
//! tenant with its plan's `requests_per_second` and a burst of the same size.
//!
//! What does not live here: the plan lookup (the caller passes the rate from
//! its snapshot) and the HTTP 429 answer.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

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
}
