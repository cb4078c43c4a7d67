//! Per-client-address token buckets. Time is passed in, so the limiter is a plain value that
//! tests drive without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Addresses tracked before idle (refilled) buckets are swept; bounds memory under a flood of
/// source addresses.
const SWEEP_AT: usize = 50_000;

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// `rate` requests per second with bursts of `burst`; a rate of 0 admits everything.
    pub fn new(rate: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `addr`, or says how long until one is available.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= SWEEP_AT {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(addr).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills() {
        let l = RateLimiter::new(2.0, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t = Instant::now();
        for _ in 0..3 {
            l.check(a, t).unwrap();
        }
        let wait = l.check(a, t).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500));
        l.check(b, t).unwrap();
        l.check(a, t + Duration::from_millis(500)).unwrap();
        assert!(l.check(a, t + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn zero_rate_is_off() {
        let l = RateLimiter::new(0.0, 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..100 {
            l.check(a, Instant::now()).unwrap();
        }
    }
}
