//! GCRA (the generic cell rate algorithm): one number per caller and limit,
//! the theoretical arrival time (TAT) of its next call at the sustained
//! rate. A call is allowed while the TAT it would push forward stays within
//! the burst's tolerance of now. The same arithmetic, in microseconds, runs
//! here for the in-process limits and in Redis's Lua script
//! (`super::redis::SCRIPT`) for limits shared across replicas.
//!
//! Written here rather than taken from `governor`: the in-process and the
//! Redis limits must agree to the microsecond (the same step, the same
//! tests), and a TAT at or before now means exactly what a missing entry
//! means, so idle callers are dropped without losing anything
//! ([`LocalLimits`] sweeps them), where governor's keyed store needs a
//! sweep of its own on a schedule.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// One GCRA step. `tat`: the caller's stored TAT, if any; all in
/// microseconds. Allowed: the new TAT to store. Refused: how long until
/// the call would be allowed.
pub fn step(tat: Option<u64>, now: u64, interval: u64, tolerance: u64) -> Result<u64, u64> {
    let tat = tat.map_or(now, |tat| tat.max(now));
    let new_tat = tat + interval;
    let allowed_at = new_tat.saturating_sub(tolerance);
    if now >= allowed_at { Ok(new_tat) } else { Err(allowed_at - now) }
}

/// Shards of the in-process table, so concurrent calls of different
/// callers rarely wait for one another's lock.
const SHARDS: usize = 16;

/// A shard is swept of idle callers once it holds this many, and then
/// whenever it has doubled since the last sweep: amortised O(1) per call.
const MIN_SWEEP_LEN: usize = 1024;

/// The in-process limits: every caller's TAT per limit, in memory. Memory
/// follows the callers active within their burst's window: an entry whose
/// TAT has passed is dropped at the next sweep of its shard.
#[derive(Debug)]
pub struct LocalLimits {
    started: Instant,
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<Shard>>,
}

#[derive(Debug)]
struct Shard {
    tats: HashMap<String, u64>,
    sweep_at: usize,
}

impl Default for LocalLimits {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalLimits {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard { tats: HashMap::new(), sweep_at: MIN_SWEEP_LEN })).collect(),
        }
    }

    /// Microseconds since this table was made: its clock.
    pub fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// One call of `key` now: allowed, or refused with the microseconds to
    /// wait.
    pub fn check(&self, key: &str, interval: u64, tolerance: u64) -> Result<(), u64> {
        self.check_at(key, self.now(), interval, tolerance)
    }

    /// [`LocalLimits::check`] at a given time (tests).
    pub fn check_at(&self, key: &str, now: u64, interval: u64, tolerance: u64) -> Result<(), u64> {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tat) = shard.tats.get_mut(key) {
            *tat = step(Some(*tat), now, interval, tolerance)?;
            return Ok(());
        }
        let tat = step(None, now, interval, tolerance)?;
        if shard.tats.len() >= shard.sweep_at {
            shard.tats.retain(|_, tat| *tat > now);
            shard.sweep_at = (shard.tats.len() * 2).max(MIN_SWEEP_LEN);
        }
        shard.tats.insert(key.to_owned(), tat);
        Ok(())
    }

    /// Callers remembered now, over every shard (tests).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).tats.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    #[test]
    fn a_burst_passes_at_once_then_calls_are_spaced_by_the_interval() {
        // 10 per minute, a burst of 3: one call every 6 s.
        let (interval, tolerance) = (6 * SECOND, 18 * SECOND);
        let mut tat = None;
        for n in 0..3 {
            tat = Some(step(tat, 0, interval, tolerance).unwrap_or_else(|_| panic!("call {n} of the burst")));
        }
        assert_eq!(step(tat, 0, interval, tolerance), Err(6 * SECOND), "the fourth waits one interval");
        assert_eq!(step(tat, 4 * SECOND, interval, tolerance), Err(2 * SECOND), "less as time passes");
        let tat = step(tat, 6 * SECOND, interval, tolerance).expect("allowed after one interval");
        assert_eq!(step(Some(tat), 6 * SECOND, interval, tolerance), Err(6 * SECOND), "and only one");
        // After a quiet spell the whole burst is back, no more.
        let mut tat = Some(tat);
        for _ in 0..3 {
            tat = Some(step(tat, 600 * SECOND, interval, tolerance).unwrap());
        }
        assert!(step(tat, 600 * SECOND, interval, tolerance).is_err());
    }

    #[test]
    fn a_burst_of_one_allows_one_call_per_interval() {
        let (interval, tolerance) = (SECOND, SECOND);
        let tat = step(None, 0, interval, tolerance).unwrap();
        assert_eq!(step(Some(tat), 0, interval, tolerance), Err(SECOND));
        assert_eq!(step(Some(tat), SECOND - 1, interval, tolerance), Err(1));
        assert!(step(Some(tat), SECOND, interval, tolerance).is_ok());
    }

    #[test]
    fn keys_are_limited_apart() {
        let limits = LocalLimits::new();
        assert!(limits.check_at("writes key:a", 0, SECOND, SECOND).is_ok());
        assert_eq!(limits.check_at("writes key:a", 0, SECOND, SECOND), Err(SECOND));
        assert!(limits.check_at("writes key:b", 0, SECOND, SECOND).is_ok());
        assert!(limits.check_at("reads key:a", 0, SECOND, SECOND).is_ok());
    }

    #[test]
    fn idle_callers_are_forgotten_so_memory_stays_bounded() {
        let limits = LocalLimits::new();
        // 200,000 callers once each, 10 us apart, each idle again 1 ms
        // later: about 100 are within their window at any time.
        let (interval, tolerance) = (1_000, 1_000);
        let callers = 200_000;
        for n in 0..callers {
            limits.check_at(&format!("key:{n}"), n * 10, interval, tolerance).unwrap();
        }
        let remembered = limits.len();
        assert!(remembered <= SHARDS * MIN_SWEEP_LEN, "{remembered} of {callers} callers remembered");
        // Forgetting loses nothing: a caller still within its window is kept.
        let last = format!("key:{}", callers - 1);
        assert!(limits.check_at(&last, callers * 10, interval, tolerance).is_err());
    }
}
