//! [`Recent`]: the last hour of each tenant's requests, minute by minute
//! (how many, how many answered 5xx, and a latency histogram), for the
//! console's charts, error rates and p99. A tenant's hour takes a few
//! kilobytes and exists once it has had a request.
//!
//! What does not live here: the Prometheus counters since the start
//! (`metrics`), the day's request count and quotas (`usage`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Minutes kept, the current one included.
pub const MINUTES: usize = 60;

/// Upper bounds of the latency buckets, in milliseconds (the last one
/// catches the rest).
const BOUNDS_MS: [f64; 14] = [
    1.0,
    2.5,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
    f64::INFINITY,
];

#[derive(Clone, Copy, Default)]
struct Minute {
    /// Minutes since the epoch this slot holds (slots of older minutes are
    /// stale and read as empty).
    at: u64,
    requests: u32,
    errors: u32,
    latency: [u32; BOUNDS_MS.len()],
}

/// Every tenant's last hour.
#[derive(Default)]
pub struct Recent {
    tenants: Mutex<HashMap<String, Box<[Minute; MINUTES]>>>,
}

/// One tenant's last hour, summed up.
#[derive(Debug, Clone, PartialEq)]
pub struct Hour {
    /// Requests per minute, oldest first, the current minute last.
    pub per_minute: Vec<u64>,
    /// Share of the hour's requests answered 5xx.
    pub error_rate: f64,
    /// The hour's 99th percentile latency, as its bucket's upper bound in
    /// milliseconds (the top bucket reads as its lower bound); None
    /// without requests.
    pub p99_ms: Option<f64>,
}

impl Hour {
    /// An hour without requests.
    pub fn empty() -> Hour {
        Hour {
            per_minute: vec![0; MINUTES],
            error_rate: 0.0,
            p99_ms: None,
        }
    }
}

fn minute_of(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        / 60
}

impl Recent {
    pub fn new() -> Recent {
        Recent::default()
    }

    /// One finished request of `tenant`.
    pub fn record(&self, tenant: &str, status: u16, latency: Duration, now: SystemTime) {
        let at = minute_of(now);
        let ms = latency.as_secs_f64() * 1000.0;
        let bucket = BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BOUNDS_MS.len() - 1);
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let hour = match tenants.get_mut(tenant) {
            Some(hour) => hour,
            None => tenants
                .entry(tenant.to_owned())
                .or_insert_with(|| Box::new([Minute::default(); MINUTES])),
        };
        let slot = &mut hour[(at % MINUTES as u64) as usize];
        if slot.at != at {
            *slot = Minute {
                at,
                ..Minute::default()
            };
        }
        slot.requests += 1;
        slot.errors += u32::from(status >= 500);
        slot.latency[bucket] += 1;
    }

    /// `tenant`'s last hour as of `now` (all zeros without requests).
    pub fn hour(&self, tenant: &str, now: SystemTime) -> Hour {
        let now = minute_of(now);
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        match tenants.get(tenant) {
            Some(minutes) => sum(minutes, now),
            None => Hour::empty(),
        }
    }

    /// Every tenant's last hour as of `now` (one lock for all).
    pub fn hours(&self, now: SystemTime) -> HashMap<String, Hour> {
        let now = minute_of(now);
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants
            .iter()
            .map(|(name, minutes)| (name.clone(), sum(minutes, now)))
            .collect()
    }

    /// Forgets tenants that are no longer served.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants.retain(|name, _| keep(name));
    }
}

/// The hour ending at minute `now` of one tenant's slots.
fn sum(hour: &[Minute; MINUTES], now: u64) -> Hour {
    let mut per_minute = Vec::with_capacity(MINUTES);
    let (mut requests, mut errors) = (0u64, 0u64);
    let mut latency = [0u64; BOUNDS_MS.len()];
    for back in (0..MINUTES as u64).rev() {
        let Some(at) = now.checked_sub(back) else {
            per_minute.push(0);
            continue;
        };
        let slot = &hour[(at % MINUTES as u64) as usize];
        if slot.at != at {
            per_minute.push(0);
            continue;
        }
        per_minute.push(u64::from(slot.requests));
        requests += u64::from(slot.requests);
        errors += u64::from(slot.errors);
        for (sum, n) in latency.iter_mut().zip(slot.latency) {
            *sum += u64::from(n);
        }
    }
    let p99_ms = (requests > 0).then(|| {
        let rank = (requests * 99).div_ceil(100);
        let mut seen = 0;
        let i = latency
            .iter()
            .position(|n| {
                seen += n;
                seen >= rank
            })
            .unwrap_or(BOUNDS_MS.len() - 1);
        if i == BOUNDS_MS.len() - 1 {
            BOUNDS_MS[i - 1]
        } else {
            BOUNDS_MS[i]
        }
    });
    Hour {
        per_minute,
        error_rate: if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        },
        p99_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_is_counted_minute_by_minute_and_forgets_older_ones() {
        let r = Recent::new();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_796_083_200);
        let ms = Duration::from_millis;
        for _ in 0..98 {
            r.record("shop", 200, ms(3), t0);
        }
        r.record("shop", 500, ms(40), t0);
        r.record("shop", 503, ms(40), t0 + Duration::from_secs(60));
        let h = r.hour("shop", t0 + Duration::from_secs(60));
        assert_eq!(h.per_minute.len(), MINUTES);
        assert_eq!(&h.per_minute[MINUTES - 2..], &[99, 1]);
        assert!((h.error_rate - 0.02).abs() < 1e-9, "{}", h.error_rate);
        // 100 requests: the 99th is in the 50 ms bucket.
        assert_eq!(h.p99_ms, Some(50.0));
        // An hour later the first minute is gone, the second one too soon after.
        let later = r.hour("shop", t0 + Duration::from_secs(60 * 60));
        assert_eq!(later.per_minute.iter().sum::<u64>(), 1);
        let gone = r.hour("shop", t0 + Duration::from_secs(3 * 60 * 60));
        assert_eq!(gone.per_minute.iter().sum::<u64>(), 0);
        assert_eq!(gone.p99_ms, None);
        assert_eq!(r.hour("cafe", t0).per_minute, vec![0; MINUTES]);
        // A slot reused by a later minute starts from zero.
        r.record("shop", 200, ms(1), t0 + Duration::from_secs(60 * 60));
        let reused = r.hour("shop", t0 + Duration::from_secs(60 * 60));
        assert_eq!(reused.per_minute[MINUTES - 1], 1);
        assert_eq!(reused.per_minute.iter().sum::<u64>(), 2);
        r.retain(|name| name != "shop");
        assert_eq!(r.hour("shop", t0).per_minute.iter().sum::<u64>(), 0);
    }
}
