//! Rate limits for the account endpoints: per client address, so that one
//! client cannot guess passwords quickly or flood the password hasher, and per
//! account, so that many addresses together cannot guess one account's
//! password quickly either.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A request refused by the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many attempts; retry in {} s", self.retry_after_secs())]
pub struct RateLimited {
    /// How long until the next attempt would be allowed.
    pub retry_after: Duration,
}

impl RateLimited {
    /// The wait in whole seconds (at least one), rounded up so that a client
    /// that waits this long succeeds; the value of a `Retry-After` header.
    #[must_use]
    pub fn retry_after_secs(&self) -> u64 {
        let whole = self.retry_after.as_secs();
        let rounded = if self.retry_after.subsec_nanos() > 0 {
            whole + 1
        } else {
            whole
        };
        rounded.max(1)
    }
}

/// A limiter whose memory of quiet keys must be dropped now and then.
pub trait Sweep {
    /// Forget keys that no longer hold anything back.
    fn retain_recent(&self);
}

impl<K: LimitKey> Sweep for Limiter<K> {
    fn retain_recent(&self) {
        Limiter::retain_recent(self);
    }
}

impl<K: LimitKey> Sweep for FailureLimiter<K> {
    fn retain_recent(&self) {
        FailureLimiter::retain_recent(self);
    }
}

/// What a limiter counts attempts by: a client address or an account name.
pub trait LimitKey: Hash + Eq + Clone + Send + Sync + 'static {
    /// The key attempts are counted under: keys one client can switch
    /// between freely count as one.
    #[must_use]
    fn normalized(&self) -> Self;
}

/// A token bucket per key: `per_minute` attempts, refilled evenly over the
/// minute, with a burst of the full minute's allowance.
#[derive(Debug)]
pub struct Limiter<K: LimitKey = IpAddr> {
    /// One bucket per normalized key.
    buckets: DefaultKeyedRateLimiter<K>,
}

impl<K: LimitKey> Limiter<K> {
    /// Allow `per_minute` attempts per key (at least one).
    #[must_use]
    pub fn per_minute(per_minute: u32) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        Self {
            buckets: RateLimiter::keyed(quota),
        }
    }

    /// Count one attempt by `key`.
    ///
    /// # Errors
    /// `RateLimited` with the wait until the next allowed attempt.
    pub fn check(&self, key: &K) -> Result<(), RateLimited> {
        self.buckets
            .check_key(&key.normalized())
            .map_err(|not_until| RateLimited {
                retry_after: not_until.wait_time_from(self.buckets.clock().now()),
            })
    }

    /// Forget keys whose buckets are full again. Call it periodically:
    /// without it every address ever seen keeps an entry.
    pub fn retain_recent(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }

    /// How many keys are tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Failed attempts per key: only failures use up the allowance, and once it
/// is gone every attempt is refused, before anything is checked, until it
/// refills. For logins per account this holds a password guesser spread
/// over many addresses to the allowance, while the account's owner, who does
/// not fail, never uses any of it. The price is that someone who keeps
/// failing at an account holds its password logins refused meanwhile.
#[derive(Debug)]
pub struct FailureLimiter<K: LimitKey> {
    /// The allowance, used up by failures.
    failures: Limiter<K>,
    /// Keys whose allowance is gone, with when the next attempt is allowed.
    /// A std `Mutex`: held for one map operation, never across an `.await`.
    blocked: std::sync::Mutex<std::collections::HashMap<K, std::time::Instant>>,
}

impl<K: LimitKey> FailureLimiter<K> {
    /// Allow `per_minute` failures per key (at least one).
    #[must_use]
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            failures: Limiter::per_minute(per_minute),
            blocked: std::sync::Mutex::default(),
        }
    }

    fn blocked(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<K, std::time::Instant>> {
        self.blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `key` may try now.
    ///
    /// # Errors
    /// `RateLimited` while its failures have used up the allowance.
    pub fn check(&self, key: &K) -> Result<(), RateLimited> {
        let key = key.normalized();
        let mut blocked = self.blocked();
        match blocked.get(&key) {
            Some(&until) => {
                let now = std::time::Instant::now();
                if until > now {
                    return Err(RateLimited {
                        retry_after: until - now,
                    });
                }
                blocked.remove(&key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Count a failure of `key`.
    ///
    /// # Errors
    /// `RateLimited` when this failure used up the allowance: the next
    /// attempts are refused until it refills.
    pub fn failed(&self, key: &K) -> Result<(), RateLimited> {
        let key = key.normalized();
        self.failures.check(&key).inspect_err(|limited| {
            self.blocked()
                .insert(key.clone(), std::time::Instant::now() + limited.retry_after);
        })
    }

    /// Forget keys whose allowance is full again or whose block is over.
    pub fn retain_recent(&self) {
        self.failures.retain_recent();
        let now = std::time::Instant::now();
        self.blocked().retain(|_, until| *until > now);
    }
}

/// An IPv6 client usually holds a whole /64 and can pick any address in it,
/// so IPv6 is limited per /64; IPv4-mapped IPv6 addresses count as the IPv4
/// address they carry.
impl LimitKey for IpAddr {
    fn normalized(&self) -> Self {
        match self.to_canonical() {
            v4 @ IpAddr::V4(_) => v4,
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        }
    }
}

/// Account names count without regard to ASCII case, so `Alice` and `alice`
/// share one allowance whatever the store makes of them.
impl LimitKey for String {
    fn normalized(&self) -> Self {
        self.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn each_address_gets_its_own_allowance() {
        let limiter: Limiter = Limiter::per_minute(3);
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        for _ in 0..3 {
            limiter.check(&a).unwrap();
        }
        let refused = limiter.check(&a).unwrap_err();
        assert!(refused.retry_after > Duration::ZERO);
        assert!(refused.retry_after <= Duration::from_secs(20), "{refused}");
        assert!((1..=20).contains(&refused.retry_after_secs()));
        assert!(refused.to_string().ends_with(" s"), "{refused}");
        limiter.check(&b).unwrap();
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn ipv6_is_limited_per_64_and_mapped_ipv4_as_ipv4() {
        let limiter: Limiter = Limiter::per_minute(1);
        let one: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        limiter.check(&one.into()).unwrap();
        assert!(limiter.check(&same_64.into()).is_err());
        limiter.check(&other_64.into()).unwrap();

        let v4 = Ipv4Addr::new(198, 51, 100, 7);
        limiter.check(&v4.into()).unwrap();
        assert!(limiter.check(&v4.to_ipv6_mapped().into()).is_err());
    }

    #[test]
    fn account_names_share_an_allowance_whatever_their_case() {
        let limiter: Limiter<String> = Limiter::per_minute(2);
        limiter.check(&"Alice".to_owned()).unwrap();
        limiter.check(&"alice".to_owned()).unwrap();
        assert!(limiter.check(&"ALICE".to_owned()).is_err());
        limiter.check(&"bob".to_owned()).unwrap();
    }

    #[test]
    fn only_failures_use_up_an_allowance_and_then_every_attempt_waits() {
        let limiter: FailureLimiter<String> = FailureLimiter::per_minute(2);
        let alice = "alice".to_owned();
        // Successes cost nothing: checks alone never block.
        for _ in 0..10 {
            limiter.check(&alice).unwrap();
        }
        limiter.failed(&alice).unwrap();
        limiter.check(&"ALICE".to_owned()).unwrap();
        let limited = limiter
            .failed(&"Alice".to_owned())
            .and_then(|()| limiter.failed(&alice));
        assert!(limited.is_err(), "the third failure is over the allowance");
        let refused = limiter.check(&alice).unwrap_err();
        assert!(
            refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(30)
        );
        limiter.check(&"bob".to_owned()).unwrap();
        limiter.retain_recent();
        assert!(
            limiter.check(&alice).is_err(),
            "still blocked after a sweep"
        );
    }

    #[test]
    fn retain_recent_forgets_full_buckets() {
        let limiter: Limiter = Limiter::per_minute(600);
        limiter.check(&Ipv4Addr::LOCALHOST.into()).unwrap();
        assert_eq!(limiter.len(), 1);
        // 600 a minute refills one attempt every 100 ms; governor forgets a key
        // one refill interval after its bucket is full again.
        std::thread::sleep(Duration::from_millis(300));
        limiter.retain_recent();
        assert!(limiter.is_empty());
    }
}
