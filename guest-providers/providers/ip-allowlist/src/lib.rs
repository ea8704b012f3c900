//! `ip-allowlist`: lets a request through only when its peer address lies in a listed
//! network whose required scopes the caller holds. See README.md for the contract.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use portcullis_sdk::{Authorizer, Denial, Host, Identity, Request};
use serde::Deserialize;

/// The operator's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The networks requests may come from.
    pub networks: Vec<NetworkConfig>,
}

/// One entry of `networks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// `10.0.0.0/8`, `2001:db8::/32`, or a single address.
    pub cidr: String,
    /// Scopes a caller must all hold to enter from this network; none means anyone.
    #[serde(default)]
    pub required_scopes: Vec<String>,
}

/// A configured provider.
#[derive(Debug)]
pub struct IpAllowlist {
    networks: Vec<(Cidr, Vec<String>)>,
}

impl Authorizer for IpAllowlist {
    type Config = Config;

    fn new(config: Config, _host: &dyn Host) -> Result<Self, String> {
        if config.networks.is_empty() {
            return Err("`networks` is empty: every request would be refused".into());
        }
        let networks = config
            .networks
            .into_iter()
            .map(|network| Ok((network.cidr.parse()?, network.required_scopes)))
            .collect::<Result<_, String>>()?;
        Ok(Self { networks })
    }

    fn authorize(
        &self,
        req: &dyn Request,
        caller: &Identity,
        _host: &dyn Host,
    ) -> Result<(), Denial> {
        let peer = req
            .peer_addr()
            .ok_or_else(|| Denial::access_denied("the peer address is unknown"))?;
        let ip = parse_peer(&peer)
            .ok_or_else(|| Denial::access_denied(format!("unreadable peer address `{peer}`")))?;
        let mut in_a_network = false;
        for (cidr, required) in &self.networks {
            if cidr.contains(ip) {
                in_a_network = true;
                if required.iter().all(|scope| caller.has_scope(scope)) {
                    return Ok(());
                }
            }
        }
        Err(Denial::access_denied(if in_a_network {
            format!("`{}` lacks the scopes required from {ip}", caller.subject)
        } else {
            format!("{ip} is not in an allowed network")
        }))
    }
}

/// `ip:port`, `[ipv6]:port` or a bare address. IPv4-mapped IPv6 reads as IPv4, so that a
/// dual-stack listener matches IPv4 networks.
fn parse_peer(peer: &str) -> Option<IpAddr> {
    let ip = match SocketAddr::from_str(peer) {
        Ok(addr) => addr.ip(),
        Err(_) => peer.parse().ok()?,
    };
    Some(ip.to_canonical())
}

/// A network: an address and a prefix length, with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network; an IPv4 address is never in an IPv6 network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net_bits, width) = to_bits(self.network);
        let (ip_bits, ip_width) = to_bits(ip);
        width == ip_width && mask(ip_bits, self.prefix, width) == net_bits
    }
}

/// The address as an integer, and its width in bits.
fn to_bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(ip) => (u128::from(ip.to_bits()), 32),
        IpAddr::V6(ip) => (ip.to_bits(), 128),
    }
}

/// Keeps the top `prefix` bits of a `width`-bit address.
fn mask(bits: u128, prefix: u8, width: u8) -> u128 {
    let host_bits = u32::from(width - prefix);
    bits.checked_shr(host_bits)
        .unwrap_or(0)
        .checked_shl(host_bits)
        .unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid cidr `{text}`: {why}");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| bad("not an IPv4 or IPv6 address"))?;
        let (bits, width) = to_bits(network);
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= width)
                .ok_or_else(|| bad(&format!("the prefix must be 0 to {width}")))?,
            None => width,
        };
        let masked = mask(bits, prefix, width);
        if masked != bits {
            // A typo like `10.0.0.1/8` would silently admit the whole /8.
            let suggestion = match network {
                IpAddr::V4(_) => IpAddr::from(Ipv4Addr::from_bits(masked as u32)),
                IpAddr::V6(_) => IpAddr::from(Ipv6Addr::from_bits(masked)),
            };
            return Err(bad(&format!(
                "host bits are set; did you mean `{suggestion}/{prefix}`?"
            )));
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

portcullis_sdk::export_authorizer!(IpAllowlist);

#[cfg(test)]
mod tests {
    use portcullis_sdk::configure_authorizer;
    use portcullis_sdk::testing::{FakeHost, FakeRequest};

    use super::*;

    const CONFIG: &str = r#"{"networks": [
        {"cidr": "10.0.0.0/8", "required_scopes": ["internal"]},
        {"cidr": "192.168.1.7"},
        {"cidr": "2001:db8::/32", "required_scopes": ["internal", "ops"]}
    ]}"#;

    fn authorize(peer: Option<&str>, caller: &Identity) -> Result<(), Denial> {
        let host = FakeHost::new();
        let provider: IpAllowlist = configure_authorizer(CONFIG, &host).unwrap();
        let req = match peer {
            Some(peer) => FakeRequest::get("/").peer(peer),
            None => FakeRequest::get("/"),
        };
        provider.authorize(&req, caller, &host)
    }

    fn caller(scopes: &[&str]) -> Identity {
        Identity::new("alice").with_scopes(scopes.iter().copied())
    }

    #[test]
    fn peer_in_a_network_with_its_scopes_is_allowed() {
        assert_eq!(
            authorize(Some("10.1.2.3:5000"), &caller(&["internal"])),
            Ok(())
        );
        assert_eq!(
            authorize(Some("[2001:db8::1]:443"), &caller(&["ops", "internal"])),
            Ok(())
        );
        assert_eq!(
            authorize(Some("[2001:db8::1]:443"), &caller(&["*"])),
            Ok(())
        );
    }

    #[test]
    fn network_without_required_scopes_admits_anyone() {
        assert_eq!(authorize(Some("192.168.1.7:1"), &caller(&[])), Ok(()));
        assert!(authorize(Some("192.168.1.8:1"), &caller(&[])).is_err());
    }

    #[test]
    fn ipv4_mapped_ipv6_peer_matches_ipv4_networks() {
        assert_eq!(
            authorize(Some("[::ffff:10.9.9.9]:80"), &caller(&["internal"])),
            Ok(())
        );
        assert_eq!(authorize(Some("10.9.9.9"), &caller(&["internal"])), Ok(()));
    }

    #[test]
    fn peer_outside_every_network_is_denied() {
        let denial = authorize(Some("11.0.0.1:80"), &caller(&["*"])).unwrap_err();
        assert_eq!(
            denial,
            Denial::access_denied("11.0.0.1 is not in an allowed network")
        );
        assert_eq!(denial.status, 403);
    }

    #[test]
    fn caller_missing_a_required_scope_is_denied() {
        let denial = authorize(Some("[2001:db8::1]:443"), &caller(&["internal"])).unwrap_err();
        assert_eq!(
            denial.reason,
            "`alice` lacks the scopes required from 2001:db8::1"
        );
    }

    #[test]
    fn missing_or_garbage_peer_is_denied() {
        assert!(authorize(None, &caller(&["*"])).is_err());
        assert!(authorize(Some("somewhere:80"), &caller(&["*"])).is_err());
    }

    #[test]
    fn cidr_parsing_checks_prefix_and_host_bits() {
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().map(|c| c.to_string()),
            Ok("0.0.0.0/0".into())
        );
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            "::/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            !"::/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert_eq!(
            "10.0.0.1/8".parse::<Cidr>(),
            Err("invalid cidr `10.0.0.1/8`: host bits are set; did you mean `10.0.0.0/8`?".into())
        );
        assert_eq!(
            "2001:db8::1/32".parse::<Cidr>(),
            Err(
                "invalid cidr `2001:db8::1/32`: host bits are set; did you mean `2001:db8::/32`?"
                    .into()
            )
        );
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err("invalid cidr `10.0.0.0/33`: the prefix must be 0 to 32".into())
        );
        assert!("ten/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn config_errors_are_reported() {
        let host = FakeHost::new();
        let err = configure_authorizer::<IpAllowlist>(r#"{"networks": []}"#, &host).unwrap_err();
        assert!(err.starts_with("`networks` is empty"), "got: {err}");
        let err =
            configure_authorizer::<IpAllowlist>(r#"{"networks": [{"cidr": "1.2.3.4/40"}]}"#, &host)
                .unwrap_err();
        assert!(err.contains("1.2.3.4/40"), "got: {err}");
        let err = configure_authorizer::<IpAllowlist>("{}", &host).unwrap_err();
        assert!(err.contains("missing field `networks`"), "got: {err}");
    }
}
