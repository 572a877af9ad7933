//! The client's address behind load balancers: the per-address connection
//! cap and the login rate limits count clients, not the proxy in front of
//! them.
//!
//! Only proxies named in `TRUSTED_PROXIES` are believed. `X-Forwarded-For`
//! is read from the right, the end each proxy appends to, skipping trusted
//! proxies; the first address that is not one is the client. Anything to its
//! left was written by the client itself and is ignored, so a client cannot
//! escape its limits by sending a made-up header, with or without a proxy.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;

/// The header proxies record the addresses they forward for in.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The networks whose connections are proxies to believe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// An entry of `TRUSTED_PROXIES` that is neither an address nor a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an IP address or a network like 10.0.0.0/8")]
pub struct InvalidProxy(String);

impl FromStr for TrustedProxies {
    type Err = InvalidProxy;

    /// A comma-separated list of addresses and networks
    /// (`10.0.0.0/8, 192.168.1.7, fd00::/8`); empty trusts none.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let nets = list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map(canonical_net)
                    .map_err(|_| InvalidProxy(entry.to_owned()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }
}

impl TrustedProxies {
    /// Whether no proxy is trusted (the header is never read).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a connection from `peer` with `headers`.
    #[must_use]
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        // Several headers read as one list, in order. The entries are split
        // as bytes: a line a proxy appended to may hold anything the client
        // wrote before it, and skipping a whole unreadable line would skip
        // the proxy's entry with it.
        let hops = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .rev();
        for hop in hops {
            match std::str::from_utf8(hop).ok().and_then(parse_hop) {
                Some(ip) => client = ip,
                // A trusted proxy writes addresses; anything else is not
                // worth believing, so the last proxy is taken as the client.
                None => return client,
            }
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, maybe in brackets or with a
/// port (`[::1]`, `[::1]:80`, `192.0.2.1:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let bare = hop
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(hop);
    bare.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// An IPv4-mapped network (`::ffff:10.0.0.0/104`) as the IPv4 network it
/// names, since addresses are compared in their canonical form
/// (`IpAddr::to_canonical`: an IPv4 address seen through an IPv6 socket is
/// itself, so `10.0.0.0/8` matches `::ffff:10.1.2.3`).
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

/// The client's address: the peer's, or the one trusted proxies forwarded
/// for. Needs `ConnectInfo<SocketAddr>` (serve with
/// `into_make_service_with_connect_info`); the trusted proxies come from an
/// `Arc<TrustedProxies>` request extension, and without one none are trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = <ConnectInfo<SocketAddr> as FromRequestParts<S>>::Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state).await?;
        let ip = match parts.extensions.get::<Arc<TrustedProxies>>() {
            Some(trusted) => trusted.client(peer.ip(), &parts.headers),
            None => peer.ip().to_canonical(),
        };
        Ok(Self(ip))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let none = TrustedProxies::default();
        let forged = headers(&["203.0.113.9"]);
        assert_eq!(none.client(ip("198.51.100.1"), &forged), ip("198.51.100.1"));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let forged = headers(&["10.0.0.5"]);
        assert_eq!(
            trusted.client(ip("198.51.100.1"), &forged),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted: TrustedProxies = "10.0.0.0/8, 192.168.1.7".parse().unwrap();
        // The client forged the first entry; the edge proxy 192.168.1.7
        // appended the address it saw, and the inner proxy 10.1.1.1 appended
        // the edge's.
        let chain = headers(&["1.1.1.1, 203.0.113.9", "192.168.1.7"]);
        assert_eq!(trusted.client(ip("10.1.1.1"), &chain), ip("203.0.113.9"));
        // One proxy, one hop.
        let one = headers(&["203.0.113.10"]);
        assert_eq!(trusted.client(ip("10.1.1.1"), &one), ip("203.0.113.10"));
    }

    #[test]
    fn hops_with_ports_and_mapped_addresses_are_read() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let peer = IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(
            trusted.client(peer, &headers(&["203.0.113.9:5555"])),
            ip("203.0.113.9")
        );
        assert_eq!(
            trusted.client(peer, &headers(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
        assert_eq!(
            trusted.client(peer, &headers(&["[2001:db8::2]"])),
            ip("2001:db8::2")
        );
        // A mapped network in the list trusts the IPv4 addresses it names.
        let mapped: TrustedProxies = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(mapped.trusts(ip("10.1.2.3")));
        assert!(!mapped.trusts(ip("11.1.2.3")));
    }

    #[test]
    fn a_proxy_with_no_or_a_garbled_header_is_the_client() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            trusted.client(ip("10.0.0.1"), &headers(&[])),
            ip("10.0.0.1")
        );
        assert_eq!(
            trusted.client(ip("10.0.0.1"), &headers(&["203.0.113.9, unknown"])),
            ip("10.0.0.1")
        );
        // An unreadable entry ends the walk, even on a line the proxy
        // appended its own entry to, and even before a readable line.
        let mut odd = HeaderMap::new();
        odd.append(FORWARDED_FOR, HeaderValue::from_str("6.6.6.6").unwrap());
        odd.append(
            FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff, 10.9.9.9").unwrap(),
        );
        assert_eq!(trusted.client(ip("10.0.0.1"), &odd), ip("10.9.9.9"));
        let mut odd = HeaderMap::new();
        odd.append(FORWARDED_FOR, HeaderValue::from_str("6.6.6.6").unwrap());
        odd.append(FORWARDED_FOR, HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(trusted.client(ip("10.0.0.1"), &odd), ip("10.0.0.1"));
        // Only proxies all the way: the leftmost of them.
        assert_eq!(
            trusted.client(ip("10.0.0.1"), &headers(&["10.0.0.3, 10.0.0.2"])),
            ip("10.0.0.3")
        );
    }

    #[test]
    fn lists_parse_and_bad_entries_are_named() {
        let parsed: TrustedProxies = " 10.0.0.0/8 ,127.0.0.1,, fd00::/8".parse().unwrap();
        assert_eq!(parsed.nets.len(), 3);
        assert!(parsed.trusts(ip("127.0.0.1")));
        assert!(!parsed.trusts(ip("127.0.0.2")));
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        assert_eq!(
            "10.0.0.0/8, proxy.local".parse::<TrustedProxies>(),
            Err(InvalidProxy("proxy.local".into()))
        );
    }
}
