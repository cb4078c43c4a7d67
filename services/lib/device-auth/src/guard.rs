//! Bounds on password guessing and on the audit rows refusals write. Sans-IO: every call takes
//! the time, so tests drive a clock of their own.
//!
//! - Per user name, across source addresses: each failed password doubles the wait before the
//!   next check of that name (from `base` up to `max`), and the failure count decays by one per
//!   `decay` without failures, so the real device is slowed, never locked out for good.
//! - Globally: at most `failures_per_second` failed authentications per second are checked;
//!   beyond that, Basic credentials are refused unchecked (503 with Retry-After) for the rest
//!   of that second.
//! - Audit: per source address and interval, the first `per_source` refusals are audited one
//!   by one; the rest are counted and reported as one summary event when the interval ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Entries tracked before stale ones are swept; bounds memory under a flood of names.
const SWEEP_AT: usize = 50_000;

#[derive(Debug, Clone)]
pub struct GuardLimits {
    pub user_base_delay: Duration,
    pub user_max_delay: Duration,
    pub user_decay: Duration,
    /// 0 turns the global bound off.
    pub failures_per_second: u32,
    pub audit_per_source: u32,
    pub audit_interval: Duration,
}

#[derive(Debug, Clone, Copy)]
struct UserState {
    failures: u32,
    last_failure: Instant,
    blocked_until: Instant,
}

#[derive(Debug, Clone, Copy)]
struct SourceWindow {
    started: Instant,
    audited: u32,
    suppressed: u64,
}

/// Why a password was not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotChecked {
    /// This user name failed recently; wait this long.
    UserBackoff(Duration),
    /// Too many failed authentications server-wide this second.
    GlobalBound(Duration),
}

/// Whether a refusal is audited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalAudit {
    Record,
    /// Counted into the source's next summary.
    Counted,
}

/// A source's refusals that were counted, not recorded, in an interval that has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalSummary {
    pub source: IpAddr,
    pub suppressed: u64,
    pub interval: Duration,
}

#[derive(Debug)]
pub struct AuthGuard {
    limits: GuardLimits,
    users: Mutex<HashMap<String, UserState>>,
    /// (start of the current second, failures in it)
    global: Mutex<Option<(Instant, u32)>>,
    sources: Mutex<HashMap<IpAddr, SourceWindow>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AuthGuard {
    pub fn new(limits: GuardLimits) -> AuthGuard {
        AuthGuard {
            limits,
            users: Mutex::new(HashMap::new()),
            global: Mutex::new(None),
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a password for `user` may be checked now.
    pub fn may_check(&self, user: &str, now: Instant) -> Result<(), NotChecked> {
        if self.limits.failures_per_second > 0
            && let Some((start, count)) = *lock(&self.global)
        {
            let elapsed = now.saturating_duration_since(start);
            if elapsed < Duration::from_secs(1) && count >= self.limits.failures_per_second {
                return Err(NotChecked::GlobalBound(Duration::from_secs(1) - elapsed));
            }
        }
        if let Some(state) = lock(&self.users).get(user)
            && now < state.blocked_until
        {
            return Err(NotChecked::UserBackoff(state.blocked_until - now));
        }
        Ok(())
    }

    /// The failures `user` still counts at `now`, after decay.
    fn decayed(&self, state: &UserState, now: Instant) -> u32 {
        let quiet = now.saturating_duration_since(state.last_failure);
        let steps = if self.limits.user_decay.is_zero() {
            u32::MAX
        } else {
            u32::try_from(quiet.as_nanos() / self.limits.user_decay.as_nanos()).unwrap_or(u32::MAX)
        };
        state.failures.saturating_sub(steps)
    }

    /// Records a wrong password for `user`; returns the wait now imposed on that name.
    pub fn record_failure(&self, user: &str, now: Instant) -> Duration {
        {
            let mut global = lock(&self.global);
            *global = match *global {
                Some((start, count))
                    if now.saturating_duration_since(start) < Duration::from_secs(1) =>
                {
                    Some((start, count.saturating_add(1)))
                }
                _ => Some((now, 1)),
            };
        }
        let mut users = lock(&self.users);
        if users.len() >= SWEEP_AT {
            let decay = self.limits.user_decay;
            users.retain(|_, s| {
                now < s.blocked_until || now.saturating_duration_since(s.last_failure) < decay
            });
        }
        let failures = match users.get(user) {
            Some(s) => self.decayed(s, now).saturating_add(1),
            None => 1,
        };
        let delay = self
            .limits
            .user_base_delay
            .saturating_mul(1u32 << (failures - 1).min(20))
            .min(self.limits.user_max_delay);
        users.insert(
            user.to_string(),
            UserState {
                failures,
                last_failure: now,
                blocked_until: now + delay,
            },
        );
        delay
    }

    /// A correct password: the name's count starts again.
    pub fn record_success(&self, user: &str) {
        lock(&self.users).remove(user);
    }

    /// Notes a refusal from `source`: audited individually, or counted. Also returns the
    /// summaries of sources whose interval has ended.
    pub fn note_refusal(
        &self,
        source: IpAddr,
        now: Instant,
    ) -> (RefusalAudit, Vec<RefusalSummary>) {
        let interval = self.limits.audit_interval;
        let mut sources = lock(&self.sources);
        let mut summaries = Vec::new();
        sources.retain(|addr, w| {
            if now.saturating_duration_since(w.started) < interval {
                return true;
            }
            if w.suppressed > 0 {
                summaries.push(RefusalSummary {
                    source: *addr,
                    suppressed: w.suppressed,
                    interval,
                });
            }
            false
        });
        let window = sources.entry(source).or_insert(SourceWindow {
            started: now,
            audited: 0,
            suppressed: 0,
        });
        let audit = if window.audited < self.limits.audit_per_source {
            window.audited += 1;
            RefusalAudit::Record
        } else {
            window.suppressed += 1;
            RefusalAudit::Counted
        };
        summaries.sort_by_key(|s| s.source);
        (audit, summaries)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits() -> GuardLimits {
        GuardLimits {
            user_base_delay: Duration::from_secs(1),
            user_max_delay: Duration::from_secs(60),
            user_decay: Duration::from_secs(600),
            failures_per_second: 5,
            audit_per_source: 3,
            audit_interval: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_user_name_backs_off_exponentially_capped_and_recovers() {
        let g = AuthGuard::new(limits());
        let t0 = Instant::now();
        let mut t = t0;
        let mut delays = Vec::new();
        // Guesses spread over time (as from many addresses), each after the previous wait.
        for _ in 0..9 {
            g.may_check("sn-1", t).unwrap();
            let d = g.record_failure("sn-1", t);
            delays.push(d.as_secs());
            assert_eq!(
                g.may_check("sn-1", t),
                Err(NotChecked::UserBackoff(d)),
                "the name waits, from any address"
            );
            t += d;
        }
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // Other names are not affected.
        g.may_check("sn-2", t0).unwrap();
        // Never permanent: after the cap the name may try again, and a quiet spell decays the
        // count so the next failure waits less.
        g.may_check("sn-1", t).unwrap();
        let later = t + Duration::from_secs(600 * 6);
        assert_eq!(g.record_failure("sn-1", later), Duration::from_secs(8));
        // The right password clears the count.
        g.record_success("sn-1");
        g.may_check("sn-1", later).unwrap();
        assert_eq!(g.record_failure("sn-1", later), Duration::from_secs(1));
    }

    #[test]
    fn a_global_bound_on_failures_per_second() {
        let g = AuthGuard::new(limits());
        let t = Instant::now();
        for i in 0..5 {
            g.may_check(&format!("sn-{i}"), t).unwrap();
            g.record_failure(&format!("sn-{i}"), t);
        }
        let half = t + Duration::from_millis(500);
        assert_eq!(
            g.may_check("sn-new", half),
            Err(NotChecked::GlobalBound(Duration::from_millis(500)))
        );
        g.may_check("sn-new", t + Duration::from_secs(1)).unwrap();

        let mut off = limits();
        off.failures_per_second = 0;
        let g = AuthGuard::new(off);
        for i in 0..100 {
            g.record_failure(&format!("sn-{i}"), t);
        }
        g.may_check("sn-new", t).unwrap();
    }

    #[test]
    fn refusals_are_audited_individually_then_summarized() {
        let g = AuthGuard::new(limits());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t = Instant::now();
        let decisions: Vec<RefusalAudit> = (0..10).map(|_| g.note_refusal(a, t).0).collect();
        assert_eq!(
            decisions
                .iter()
                .filter(|d| **d == RefusalAudit::Record)
                .count(),
            3
        );
        assert_eq!(g.note_refusal(b, t).0, RefusalAudit::Record);
        let (audit, summaries) = g.note_refusal(b, t + Duration::from_secs(60));
        assert_eq!(audit, RefusalAudit::Record, "a new interval for b");
        assert_eq!(
            summaries,
            vec![RefusalSummary {
                source: a,
                suppressed: 7,
                interval: Duration::from_secs(60),
            }],
            "b had nothing suppressed, so only a is summarized"
        );
    }
}
