//! Who is on the other end of a request: the client's address and whether it reached us
//! over HTTPS, resolved once per request by the edge into a [`ClientInfo`].
//!
//! The one thing to know: `X-Forwarded-For` and `X-Forwarded-Proto` are believed only when
//! the TCP peer is one of the configured [`TrustedProxies`]. Anyone else could write
//! anything in them, so from anyone else they are ignored and the peer address is the
//! client. From a trusted peer, the client is the right-most address in
//! `X-Forwarded-For` that is not itself a trusted proxy: every hop to its right was added
//! by a proxy we trust, everything to its left could have been written by the client.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use axum::extract::{ConnectInfo, FromRequestParts};
use http::{request::Parts, HeaderMap, HeaderName};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The address ranges whose forwarding headers are believed (load balancers, the
/// Kubernetes ingress). Empty by default: nobody's.
///
/// Written as CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses (`192.0.2.7`); in
/// configuration as a list, or as one comma-separated string (handy in an environment
/// variable: `RENDERMART_TRUSTED_PROXIES=10.0.0.0/8,192.168.0.0/16`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(ranges: impl IntoIterator<Item = IpNet>) -> Self {
        Self(ranges.into_iter().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn ranges(&self) -> &[IpNet] {
        &self.0
    }

    /// Whether `ip` is one of ours. IPv4 peers of a dual-stack listener arrive as
    /// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`); they match their IPv4 range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|range| range.contains(&ip))
    }
}

/// Why a trusted proxy range was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an address range: write a CIDR such as 10.0.0.0/8, or an address")]
pub struct BadProxyRange(String);

impl FromStr for TrustedProxies {
    type Err = BadProxyRange;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(parse_range)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

fn parse_range(s: &str) -> Result<IpNet, BadProxyRange> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| BadProxyRange(s.to_owned()))
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges: Vec<String> = self.0.iter().map(IpNet::to_string).collect();
        f.write_str(&ranges.join(","))
    }
}

impl Serialize for TrustedProxies {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(IpNet::to_string))
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            One(String),
            List(Vec<String>),
        }
        let ranges = match Written::deserialize(deserializer)? {
            Written::One(s) => return s.parse().map_err(serde::de::Error::custom),
            Written::List(list) => list,
        };
        ranges
            .iter()
            .map(|s| parse_range(s.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// The client of one request, as the edge resolved it. Handlers read it with the
/// [`ClientInfo`] extractor, or the address alone with [`ClientIp`](super::ClientIp).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address: the peer, or what a trusted proxy says it forwarded for.
    /// `None` only when the server was started without connect info (in-process tests).
    pub ip: Option<IpAddr>,
    /// The client reached us over HTTPS, as a trusted TLS-terminating proxy says.
    pub https: bool,
}

impl ClientInfo {
    /// Resolves the client of a request from its TCP peer and headers.
    pub fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &TrustedProxies) -> Self {
        let Some(peer) = peer.map(|ip| ip.to_canonical()) else {
            return Self {
                ip: None,
                https: false,
            };
        };
        if !trusted.contains(peer) {
            return Self {
                ip: Some(peer),
                https: false,
            };
        }
        Self {
            ip: Some(forwarded_client(peer, headers, trusted)),
            https: forwarded_https(headers),
        }
    }
}

/// Walks `X-Forwarded-For` from the right (the hop nearest to us) past trusted proxies;
/// the first address that is not one of ours is the client. A hop that cannot be read
/// ends the walk at the last address we could vouch for.
fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    // Several headers form one list, in order (RFC 9110 §5.3).
    let hops: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("garbage").split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            break;
        };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`), as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The scheme the nearest trusted proxy reports. The right-most value is the one that
/// proxy wrote (a proxy that appends puts its own last); a client-written value further
/// left is never believed over it.
fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get_all(&X_FORWARDED_PROTO)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .rfind(|proto| !proto.is_empty())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    /// What the edge resolved; without the edge (a router tested on its own), the peer
    /// with no proxy trusted.
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(info) = parts.extensions.get::<ClientInfo>() {
            return Ok(*info);
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientInfo::resolve(
            peer,
            &parts.headers,
            &TrustedProxies::default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        h
    }

    fn proxies(s: &str) -> TrustedProxies {
        s.parse().unwrap()
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
        let spoofed = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
        ]);
        // No proxy trusted at all (the default).
        let info = ClientInfo::resolve(Some(ip("198.51.100.7")), &spoofed, &proxies(""));
        assert_eq!(info.ip, Some(ip("198.51.100.7")));
        assert!(!info.https);
        // Proxies trusted, but this peer is not one of them.
        let info = ClientInfo::resolve(Some(ip("198.51.100.7")), &spoofed, &proxies("10.0.0.0/8"));
        assert_eq!(info.ip, Some(ip("198.51.100.7")));
        assert!(!info.https);
    }

    #[test]
    fn a_trusted_chain_resolves_to_the_right_most_untrusted_hop() {
        let trusted = proxies("10.0.0.0/8, 192.168.1.1");
        // The client wrote a fake first hop; the ALB (10.1.1.1) appended the real client,
        // the ingress (192.168.1.1) appended the ALB, and the ingress is our peer.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.1.1.1")]);
        let info = ClientInfo::resolve(Some(ip("192.168.1.1")), &h, &trusted);
        assert_eq!(info.ip, Some(ip("203.0.113.9")));
        // The same chain split over two headers reads the same.
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4, 203.0.113.9"),
            ("x-forwarded-for", "10.1.1.1"),
        ]);
        assert_eq!(
            ClientInfo::resolve(Some(ip("192.168.1.1")), &h, &trusted).ip,
            Some(ip("203.0.113.9"))
        );
        // Ports and IPv6 in brackets are read; IPv4-mapped peers match IPv4 ranges.
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:4711, 10.2.2.2:80")]);
        assert_eq!(
            ClientInfo::resolve(Some(ip("::ffff:10.0.0.5")), &h, &trusted).ip,
            Some(ip("2001:db8::1"))
        );
    }

    #[test]
    fn a_trusted_peer_without_a_usable_header_is_the_client() {
        let trusted = proxies("10.0.0.0/8");
        let peer = Some(ip("10.0.0.5"));
        assert_eq!(
            ClientInfo::resolve(peer, &HeaderMap::new(), &trusted).ip,
            Some(ip("10.0.0.5"))
        );
        // An unreadable hop stops the walk at the last address a trusted proxy vouched for.
        let h = headers(&[("x-forwarded-for", "203.0.113.9, not-an-ip, 10.1.1.1")]);
        assert_eq!(
            ClientInfo::resolve(peer, &h, &trusted).ip,
            Some(ip("10.1.1.1"))
        );
        // Every hop is ours (an internal caller): the left-most one.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.1.1.1")]);
        assert_eq!(
            ClientInfo::resolve(peer, &h, &trusted).ip,
            Some(ip("10.9.9.9"))
        );
    }

    #[test]
    fn forwarded_proto_counts_only_from_a_trusted_peer_and_its_own_value() {
        let trusted = proxies("10.0.0.0/8");
        let https = headers(&[("x-forwarded-proto", "https")]);
        assert!(ClientInfo::resolve(Some(ip("10.0.0.5")), &https, &trusted).https);
        assert!(!ClientInfo::resolve(Some(ip("203.0.113.9")), &https, &trusted).https);
        // The client's own "https" to the left of the proxy's "http" is not believed.
        let appended = headers(&[("x-forwarded-proto", "https, http")]);
        assert!(!ClientInfo::resolve(Some(ip("10.0.0.5")), &appended, &trusted).https);
        assert!(!ClientInfo::resolve(Some(ip("10.0.0.5")), &HeaderMap::new(), &trusted).https);
    }

    #[test]
    fn proxy_ranges_are_read_from_a_list_or_a_comma_separated_string() {
        let from_string: TrustedProxies =
            serde_json::from_value(serde_json::json!("10.0.0.0/8, 192.0.2.7,fd00::/8")).unwrap();
        let from_list: TrustedProxies =
            serde_json::from_value(serde_json::json!(["10.0.0.0/8", "192.0.2.7", "fd00::/8"]))
                .unwrap();
        assert_eq!(from_string, from_list);
        assert_eq!(from_string.to_string(), "10.0.0.0/8,192.0.2.7/32,fd00::/8");
        assert!(from_string.contains(ip("192.0.2.7")));
        assert!(!from_string.contains(ip("192.0.2.8")));
        let err = serde_json::from_value::<TrustedProxies>(serde_json::json!(["10.0.0.0/33"]))
            .unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/33"), "{err}");
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
    }
}
