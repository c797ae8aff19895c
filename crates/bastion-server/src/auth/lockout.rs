//! Failed sign-in throttling: after `limits.failed_logins_before_lockout` failures for one
//! username, or from one client address, further attempts are refused for a while, even with
//! the right password, and the while doubles with every lockout (1 minute, 2, 4, ... up to
//! 1 hour). Only failures count; a success clears the user's count, never an address's (or a
//! guesser with one valid account could keep resetting it).
//!
//! What this is not: shared between nodes. Each node counts for itself, so a cluster of N
//! nodes allows up to N times the threshold; the per-node lockout still turns an online
//! guessing attack from thousands of tries a second into a handful an hour.
//!
//! Pure: time comes in as an argument, so every rule is tested without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;

/// Failures older than this are forgotten.
const WINDOW_SECS: i64 = 15 * 60;
const FIRST_LOCK_SECS: i64 = 60;
const MAX_LOCK_SECS: i64 = 3600;
/// Bounds memory under a flood of made-up usernames; the oldest half is dropped beyond it.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy, Default)]
struct Record {
    failures: u32,
    last_failure: i64,
    locked_until: i64,
    lockouts: u32,
}

/// Whose failures are counted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    User(String),
    Address(std::net::IpAddr),
}

pub struct Lockout {
    threshold: u32,
    records: Mutex<HashMap<Key, Record>>,
}

impl Lockout {
    pub fn new(threshold: u32) -> Lockout {
        Lockout { threshold: threshold.max(1), records: Mutex::new(HashMap::new()) }
    }

    /// `Err(seconds)` when any of the keys is locked: how long until it may try again.
    pub fn check(&self, keys: &[Key], now: i64) -> Result<(), i64> {
        let map = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let wait = keys.iter().filter_map(|k| map.get(k)).map(|r| r.locked_until - now).max().unwrap_or(0);
        if wait > 0 { Err(wait) } else { Ok(()) }
    }

    pub fn record_failure(&self, keys: &[Key], now: i64) {
        let mut map = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            let mut ages: Vec<i64> = map.values().map(|r| r.last_failure).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            map.retain(|_, r| r.last_failure > cutoff || r.locked_until > now);
        }
        for k in keys {
            let r = map.entry(k.clone()).or_default();
            if now - r.last_failure > WINDOW_SECS {
                r.failures = 0;
            }
            r.failures += 1;
            r.last_failure = now;
            if r.failures >= self.threshold {
                let lock = (FIRST_LOCK_SECS << r.lockouts.min(10)).min(MAX_LOCK_SECS);
                r.locked_until = now + lock;
                r.lockouts += 1;
                r.failures = 0;
            }
        }
    }

    pub fn record_success(&self, user: &str) {
        let mut map = self.records.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&Key::User(user.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(u: &str) -> Key {
        Key::User(u.into())
    }

    fn addr(a: &str) -> Key {
        Key::Address(a.parse().unwrap())
    }

    #[test]
    fn locks_a_user_after_the_threshold_of_failures() {
        let l = Lockout::new(3);
        let keys = [user("dr"), addr("10.0.0.1")];
        for _ in 0..2 {
            l.record_failure(&keys, 100);
            assert_eq!(l.check(&keys, 100), Ok(()));
        }
        l.record_failure(&keys, 100);
        assert_eq!(l.check(&keys, 100), Err(60));
        assert_eq!(l.check(&[user("dr"), addr("10.0.0.2")], 130), Err(30), "the user is locked from anywhere");
        assert_eq!(l.check(&keys, 161), Ok(()), "the lock ends");
    }

    #[test]
    fn locks_an_address_that_guesses_many_usernames() {
        let l = Lockout::new(3);
        for u in ["a", "b", "c"] {
            l.record_failure(&[user(u), addr("10.0.0.9")], 100);
        }
        assert!(l.check(&[user("d"), addr("10.0.0.9")], 101).is_err());
        assert_eq!(l.check(&[user("d"), addr("10.0.0.8")], 101), Ok(()));
    }

    #[test]
    fn lock_doubles_with_each_lockout_and_is_capped() {
        let l = Lockout::new(1);
        let k = [user("dr")];
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..9 {
            l.record_failure(&k, now);
            let w = l.check(&k, now).unwrap_err();
            waits.push(w);
            now += w;
        }
        assert_eq!(&waits[..4], &[60, 120, 240, 480]);
        assert_eq!(*waits.last().unwrap(), MAX_LOCK_SECS);
    }

    #[test]
    fn old_failures_are_forgotten() {
        let l = Lockout::new(2);
        l.record_failure(&[user("dr")], 0);
        l.record_failure(&[user("dr")], WINDOW_SECS + 1);
        assert_eq!(l.check(&[user("dr")], WINDOW_SECS + 1), Ok(()));
    }

    #[test]
    fn success_clears_the_user_but_not_the_address() {
        let l = Lockout::new(2);
        l.record_failure(&[user("dr"), addr("10.0.0.1")], 0);
        l.record_success("dr");
        l.record_failure(&[user("dr"), addr("10.0.0.1")], 1);
        assert_eq!(l.check(&[user("dr")], 1), Ok(()), "the user's count restarted");
        assert!(l.check(&[addr("10.0.0.1")], 1).is_err(), "the address's did not");
    }
}
