//! The per-address connection cap: at most `MAX_CONNECTIONS_PER_ADDRESS`
//! open game sockets from one client address, so that one host cannot take
//! every socket (and file descriptor) the shard has. A refused upgrade costs
//! one map lookup and a small HTTP answer; the accept loop never waits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::auth::limiter::LimitKey;

/// Open sockets per client address.
#[derive(Debug)]
pub struct AddressCap {
    /// The most per address; 0 is no limit.
    max: usize,
    /// Open sockets by address. A std `Mutex`: held for one map update,
    /// never across an `.await`.
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open socket's place under the cap, given back when dropped.
#[derive(Debug)]
pub struct AddressSlot {
    cap: Arc<AddressCap>,
    ip: IpAddr,
}

impl AddressCap {
    /// A cap of `max` sockets per address (0: none).
    #[must_use]
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more socket from `ip`, or `None` when it has `max` open.
    /// Addresses count as the login limits count them: an IPv6 client by
    /// its /64, which it can pick any address of.
    #[must_use]
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let ip = ip.normalized();
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(ip).or_default();
        if self.max > 0 && *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            cap: Arc::clone(self),
            ip,
        })
    }

    /// Sockets open from `ip` (its /64 for IPv6).
    #[must_use]
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let ip = ip.normalized();
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .cap
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            // Addresses with nothing open are forgotten, so the map holds
            // only the addresses that have sockets now.
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_max_slots_and_each_comes_back_when_dropped() {
        let cap = AddressCap::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = cap.acquire(a).unwrap();
        let _second = cap.acquire(a).unwrap();
        assert!(cap.acquire(a).is_none());
        // Another address is not affected.
        let _other = cap.acquire(b).unwrap();
        drop(first);
        assert_eq!(cap.open_from(a), 1);
        assert!(cap.acquire(a).is_some());
        assert_eq!(cap.open_from(a), 1, "the slot above was dropped at once");
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let cap = AddressCap::new(1);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _held = cap.acquire(one).unwrap();
        assert!(cap.acquire(same_64).is_none());
        assert!(cap.acquire(other_64).is_some());
    }

    #[test]
    fn no_limit_when_zero_and_the_map_forgets_closed_addresses() {
        let cap = AddressCap::new(0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..1000).map(|_| cap.acquire(ip).unwrap()).collect();
        assert_eq!(cap.open_from(ip), 1000);
        drop(slots);
        assert!(cap.open.lock().unwrap().is_empty());
    }
}
