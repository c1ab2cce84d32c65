//! Egress: where outbound HTTP (tool calls, model calls, webhook pushes) may connect.
//!
//! A [`Policy`] says which addresses may be reached: never the classes
//! [`events::egress::Class::always_refused`] names (cloud metadata, link-local, unspecified,
//! multicast, broadcast, reserved, IPv4-compatible IPv6, NAT64 local-use), loopback and private ranges unless the operator turned them
//! off, never a CIDR the operator denied. Admission already refused URLs that spell a forbidden
//! address literally; this module enforces the policy when a connection is made, on the
//! addresses a host name **resolved to**, so a name that resolves to 169.254.169.254 (or is
//! re-pointed there after admission) is refused as well. The [`Connector`] resolves, filters and
//! then connects to exactly the addresses it checked: there is no second lookup an attacker's
//! DNS could answer differently.
//!
//! This file holds the policy; `connector` the resolver and connector that enforce it.
//!
//! The policy is process configuration: `hangar serve` reads it from the environment once
//! ([`Policy::from_vars`]) and [`install`]s it before any client exists. The HTTP clients are
//! built lazily on the actor threads that use them (awc's client is not `Send`), so they take
//! the policy from here rather than through every actor in between. `docs/security.md` states
//! the policy and its variables.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use events::egress::{canonical, classify, is_metadata_host, Class};

mod connector;

pub use connector::{connector, connector_with, denied, Connector, ResolveError, Resolver};

/// The environment variables of the policy.
pub const ALLOW_LOOPBACK: &str = "HANGAR_EGRESS_ALLOW_LOOPBACK";
pub const ALLOW_PRIVATE: &str = "HANGAR_EGRESS_ALLOW_PRIVATE";
pub const DENY: &str = "HANGAR_EGRESS_DENY";

/// Which destinations outbound requests may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// 127.0.0.0/8 and `::1`. On by default: a tool or model server on the same host is the
    /// common self-hosted setup (and every black-box test's).
    pub allow_loopback: bool,
    /// 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7. On by default: self-hosted tools live
    /// there.
    pub allow_private: bool,
    /// Refused whatever their class: the operator's own list (`HANGAR_EGRESS_DENY`).
    pub deny: Vec<Cidr>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_loopback: true,
            allow_private: true,
            deny: Vec::new(),
        }
    }
}

impl Policy {
    /// Whether a connection to `ip` is allowed; IPv4 inside IPv6 (`::ffff:a.b.c.d`,
    /// `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`) is judged as the IPv4 address it reaches.
    pub fn check(&self, ip: IpAddr) -> Result<(), Reason> {
        let ip = canonical(ip);
        match classify(ip) {
            class if class.always_refused() => return Err(Reason::Always(class)),
            Class::Loopback if !self.allow_loopback => return Err(Reason::Loopback),
            Class::Private if !self.allow_private => return Err(Reason::Private),
            _ => {}
        }
        match self.deny.iter().find(|cidr| cidr.contains(ip)) {
            Some(cidr) => Err(Reason::Listed(*cidr)),
            None => Ok(()),
        }
    }

    /// Whether a host *name* may be looked up at all: metadata service names never are.
    pub fn check_name(&self, host: &str) -> Result<(), Reason> {
        if is_metadata_host(host) {
            Err(Reason::MetadataName)
        } else {
            Ok(())
        }
    }

    /// The policy from environment variables (`var` looks one up): `HANGAR_EGRESS_ALLOW_LOOPBACK`
    /// and `HANGAR_EGRESS_ALLOW_PRIVATE` (`true`/`false`), `HANGAR_EGRESS_DENY` (CIDRs or
    /// addresses, comma-separated). Unset variables keep the defaults.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Policy, ConfigError> {
        let mut policy = Policy::default();
        if let Some(v) = var(ALLOW_LOOPBACK) {
            policy.allow_loopback = flag(ALLOW_LOOPBACK, &v)?;
        }
        if let Some(v) = var(ALLOW_PRIVATE) {
            policy.allow_private = flag(ALLOW_PRIVATE, &v)?;
        }
        if let Some(v) = var(DENY) {
            policy.deny = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse().map_err(|_| ConfigError {
                        var: DENY,
                        message: format!("'{s}' is not a CIDR (e.g. 10.0.0.0/8) or an address"),
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        Ok(policy)
    }
}

fn flag(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError {
            var,
            message: format!("'{value}' is not true or false"),
        }),
    }
}

/// A bad policy variable; the server refuses to start rather than guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

/// Why a destination is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A class no configuration allows.
    Always(Class),
    Loopback,
    Private,
    /// In a CIDR of `HANGAR_EGRESS_DENY`.
    Listed(Cidr),
    /// A metadata service's host name.
    MetadataName,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Always(class) => {
                write!(f, "{}, which Hangar never connects to", class.describe())
            }
            Reason::Loopback => write!(
                f,
                "a loopback address, which this server refuses ({ALLOW_LOOPBACK}=false)"
            ),
            Reason::Private => write!(
                f,
                "a private address, which this server refuses ({ALLOW_PRIVATE}=false)"
            ),
            Reason::Listed(cidr) => write!(f, "in {cidr}, which this server refuses ({DENY})"),
            Reason::MetadataName => write!(
                f,
                "a cloud metadata service, which Hangar never connects to"
            ),
        }
    }
}

/// A connection the policy refused. Names the host and the address, never a URL path or a
/// header, so it is safe in a run's error and in the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Denied {
    pub host: String,
    /// The address refused; `None` when the name itself was.
    pub addr: Option<IpAddr>,
    pub reason: Reason,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(addr) if addr.to_string() == self.host => write!(
                f,
                "egress to {addr} refused: it is {} (see docs/security.md)",
                self.reason
            ),
            Some(addr) => write!(
                f,
                "egress to {} refused: it resolves to {addr}, {} (see docs/security.md)",
                self.host, self.reason
            ),
            None => write!(
                f,
                "egress to {} refused: it is {} (see docs/security.md)",
                self.host, self.reason
            ),
        }
    }
}

/// An IPv4 or IPv6 network, `10.0.0.0/8` or `fd00::/8`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn new(net: IpAddr, prefix: u8, width: u8) -> Result<Cidr, ()> {
        if prefix > width {
            return Err(());
        }
        // The network address itself: `10.1.2.3/8` is `10.0.0.0/8`.
        let net = match net {
            IpAddr::V4(v4) => {
                IpAddr::V4((mask(u128::from(u32::from(v4)), prefix, 32) as u32).into())
            }
            IpAddr::V6(v6) => IpAddr::V6(mask(u128::from(v6), prefix, 128).into()),
        };
        Ok(Cidr { net, prefix })
    }

    /// Whether `ip` (IPv4 inside IPv6 counts as IPv4) is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(ip)), self.prefix, 32) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), self.prefix, 128) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `bits` with everything after the first `prefix` of its `width` bits cleared.
fn mask(bits: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let keep = (u128::MAX << u32::from(width - prefix)) & (u128::MAX >> (128 - u32::from(width)));
    bits & keep
}

impl FromStr for Cidr {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| ())?;
        // An IPv4-mapped network (`::ffff:a.b.c.d/104`) is the IPv4 network it names, as the
        // addresses it is matched against are.
        if let IpAddr::V6(v6) = addr {
            if let Some(v4) = v6.to_ipv4_mapped() {
                let prefix = match prefix {
                    Some(p) => p
                        .trim()
                        .parse::<u8>()
                        .map_err(|_| ())?
                        .checked_sub(96)
                        .ok_or(())?,
                    None => 32,
                };
                return Cidr::new(IpAddr::V4(v4), prefix, 32);
            }
        }
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| ())?,
            None => width,
        };
        Cidr::new(addr, prefix, width)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

static INSTALLED: OnceLock<Arc<Policy>> = OnceLock::new();

/// Makes `policy` the process's, for every client built from now on. Once only, and before
/// any outbound client exists: a second call (or one after [`current`] handed out the default)
/// returns the policy already in force.
pub fn install(policy: Policy) -> Result<(), Arc<Policy>> {
    INSTALLED.set(Arc::new(policy)).map_err(|_| current())
}

/// The policy in force: the installed one, else (tests, tools) the default.
pub fn current() -> Arc<Policy> {
    INSTALLED
        .get_or_init(|| Arc::new(Policy::default()))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn strict() -> Policy {
        Policy {
            allow_loopback: false,
            allow_private: false,
            deny: Vec::new(),
        }
    }

    #[test]
    fn the_default_refuses_metadata_link_local_and_the_unroutable() {
        let p = Policy::default();
        for addr in [
            "169.254.169.254",
            "169.254.1.2",
            "100.100.100.200",
            "fd00:ec2::254",
            "fe80::1",
            "0.0.0.0",
            "::",
            "224.0.0.251",
            "ff02::1",
            "255.255.255.255",
            "240.1.2.3",
        ] {
            let reason = p.check(ip(addr)).expect_err(addr);
            assert!(matches!(reason, Reason::Always(_)), "{addr}: {reason}");
        }
        for addr in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "172.20.1.1",
            "192.168.0.10",
            "fd12::1",
            "8.8.8.8",
            "2606:4700::1111",
        ] {
            p.check(ip(addr)).expect(addr);
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_cannot_smuggle_a_refused_address() {
        let p = Policy::default();
        for addr in [
            "::ffff:169.254.169.254",
            "::ffff:a9fe:a9fe",
            "64:ff9b::a9fe:a9fe",
            "::ffff:169.254.0.1",
            "::ffff:0.0.0.0",
        ] {
            assert!(
                matches!(p.check(ip(addr)), Err(Reason::Always(_))),
                "{addr}"
            );
        }
        let p = strict();
        assert_eq!(p.check(ip("::ffff:127.0.0.1")), Err(Reason::Loopback));
        assert_eq!(p.check(ip("::ffff:10.1.1.1")), Err(Reason::Private));
    }

    #[test]
    fn loopback_and_private_ranges_are_the_operators_call() {
        let p = strict();
        for addr in ["127.0.0.1", "127.8.9.10", "::1"] {
            assert_eq!(p.check(ip(addr)), Err(Reason::Loopback), "{addr}");
        }
        for addr in [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
        ] {
            assert_eq!(p.check(ip(addr)), Err(Reason::Private), "{addr}");
        }
        p.check(ip("8.8.8.8")).expect("public");
        let loopback_only = Policy {
            allow_loopback: true,
            ..strict()
        };
        loopback_only.check(ip("127.0.0.1")).expect("loopback on");
        assert_eq!(loopback_only.check(ip("10.0.0.1")), Err(Reason::Private));
    }

    #[test]
    fn denied_cidrs_apply_to_every_class_and_family() {
        let p = Policy::from_vars(|k| {
            (k == DENY)
                .then(|| "10.0.0.0/8, 203.0.113.7 ,2001:db8::/32,::ffff:198.51.100.0/120".into())
        })
        .expect("parses");
        assert_eq!(p.deny.len(), 4);
        let listed = |s: &str| matches!(p.check(ip(s)), Err(Reason::Listed(_)));
        assert!(listed("10.200.0.1"));
        assert!(listed("::ffff:10.0.0.1"));
        assert!(listed("203.0.113.7"));
        assert!(!listed("203.0.113.8"));
        assert!(listed("2001:db8:1::5"));
        assert!(!listed("2001:db9::5"));
        assert!(listed("198.51.100.42"));
        assert!(!listed("198.51.101.1"));
        assert!(
            p.check(ip("192.168.1.1")).is_ok(),
            "other private ranges stay allowed"
        );
        let reason = p.check(ip("10.1.1.1")).unwrap_err();
        assert_eq!(
            reason.to_string(),
            "in 10.0.0.0/8, which this server refuses (HANGAR_EGRESS_DENY)"
        );
    }

    #[test]
    fn cidrs_parse_and_normalize() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("1.2.3.4")));
        assert!(!"0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("::2")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("2001::1")));
        assert_eq!(
            "fe80::1/10".parse::<Cidr>().unwrap().to_string(),
            "fe80::/10"
        );
        assert_eq!("1.2.3.4".parse::<Cidr>().unwrap().to_string(), "1.2.3.4/32");
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "nope",
            "10.0.0/8",
            "10.0.0.0/x",
            "::ffff:1.2.3.4/64",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_environment_sets_the_policy_and_bad_values_are_refused() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(Policy::from_vars(vars(&[])).unwrap(), Policy::default());
        let p =
            Policy::from_vars(vars(&[(ALLOW_LOOPBACK, "false"), (ALLOW_PRIVATE, "0")])).unwrap();
        assert!(!p.allow_loopback && !p.allow_private);
        let p = Policy::from_vars(vars(&[(ALLOW_LOOPBACK, " TRUE ")])).unwrap();
        assert!(p.allow_loopback);
        let err = Policy::from_vars(vars(&[(ALLOW_LOOPBACK, "maybe")])).unwrap_err();
        assert_eq!(err.var, ALLOW_LOOPBACK);
        let err = Policy::from_vars(vars(&[(DENY, "10.0.0.0/8,bogus")])).unwrap_err();
        assert_eq!(err.var, DENY);
        assert!(err.message.contains("bogus"), "{err}");
    }

    #[test]
    fn metadata_names_are_refused_before_any_lookup() {
        let p = Policy::default();
        assert_eq!(
            p.check_name("metadata.google.internal"),
            Err(Reason::MetadataName)
        );
        assert_eq!(p.check_name("Metadata."), Err(Reason::MetadataName));
        p.check_name("api.example.com").expect("ordinary name");
    }
}
