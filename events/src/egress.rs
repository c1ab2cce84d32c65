//! Where outbound requests may never go, judged from an address or from a URL's literal text.
//!
//! Agents make the server send HTTP to URLs their authors chose: a connection's `server`, a
//! model's `base_url`, a webhook's `async.url`. A few destinations must never be one of them:
//! cloud metadata endpoints hand out the host's own credentials, and link-local, unspecified,
//! multicast and broadcast addresses are never a tool server. This module names those addresses
//! ([`classify`], [`Class::always_refused`]) and the URL forms that spell them out literally
//! ([`literal_refusal`]), so a connection or a webhook pointing there is refused when it is
//! written, with the field named.
//!
//! It does no I/O and knows no configuration: a host *name* is only refused here when it is a
//! known metadata name. The runtime (`actors::egress`) applies the same classes, plus the
//! operator's choices (loopback, private ranges, extra denied CIDRs), to the addresses a name
//! actually resolves to, when it connects. `docs/security.md` states the whole policy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Host names of cloud metadata services (compared lowercased, without a trailing dot).
pub const METADATA_HOSTS: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Addresses of cloud metadata services: AWS, GCP, Azure, Oracle (169.254.169.254), AWS over
/// IPv6 (fd00:ec2::254), Alibaba (100.100.100.200), and Azure's WireServer (168.63.129.16), the
/// host platform's endpoint that hands a VM its provisioning data and extension settings: a
/// public-looking address that only means something from inside Azure.
const METADATA_V4: &[Ipv4Addr] = &[
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
];
const METADATA_V6: &[Ipv6Addr] = &[Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

/// What kind of destination an address is, as far as outbound requests are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A cloud metadata endpoint (checked before the ranges they sit in).
    Metadata,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// 0.0.0.0/8, `::`: on Linux, connecting to 0.0.0.0 reaches the host itself.
    Unspecified,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 240.0.0.0/4, reserved for future use: no server lives there.
    Reserved,
    /// `::a.b.c.d` (other than `::` and `::1`): the IPv4-compatible form RFC 4291 deprecated.
    /// No server is addressed this way, and some stacks still route it to the IPv4 address, so
    /// it is refused rather than guessed at.
    Ipv4Compatible,
    /// 64:ff9b:1::/48, the NAT64 local-use prefix (RFC 8215): where the IPv4 address sits
    /// inside depends on the local translator's prefix length, so which host it reaches cannot
    /// be told from the address.
    Nat64Local,
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10 (carrier-grade NAT),
    /// fc00::/7 (unique local), fec0::/10 (the old site-local).
    Private,
    /// Anything else.
    Public,
}

impl Class {
    /// Never reachable, whatever the operator configured.
    pub fn always_refused(self) -> bool {
        matches!(
            self,
            Class::Metadata
                | Class::LinkLocal
                | Class::Unspecified
                | Class::Multicast
                | Class::Broadcast
                | Class::Reserved
                | Class::Ipv4Compatible
                | Class::Nat64Local
        )
    }

    /// "is …", for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Class::Metadata => "a cloud metadata endpoint",
            Class::LinkLocal => "a link-local address",
            Class::Unspecified => "the unspecified address",
            Class::Multicast => "a multicast address",
            Class::Broadcast => "the broadcast address",
            Class::Reserved => "a reserved address (240.0.0.0/4)",
            Class::Ipv4Compatible => "an IPv4-compatible IPv6 address (::a.b.c.d, deprecated)",
            Class::Nat64Local => {
                "in the NAT64 local-use prefix 64:ff9b:1::/48, whose IPv4 host cannot be told"
            }
            Class::Loopback => "a loopback address",
            Class::Private => "a private address",
            Class::Public => "a public address",
        }
    }
}

/// The address a packet really goes to: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), one
/// in the NAT64 well-known prefix (`64:ff9b::a.b.c.d`) and a 6to4 address (`2002:AABB:CCDD::/48`,
/// which a 6to4 relay delivers to the IPv4 host `AA.BB.CC.DD`) are their IPv4 address, so
/// `::ffff:169.254.169.254` and `2002:a9fe:a9fe::1` are the metadata endpoint they spell.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let v4 = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    };
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return v4(s[6], s[7]);
            }
            if s[0] == 0x2002 {
                return v4(s[1], s[2]);
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// The class of `ip`, after [`canonical`].
pub fn classify(ip: IpAddr) -> Class {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let [a, b, ..] = ip.octets();
    if METADATA_V4.contains(&ip) {
        Class::Metadata
    } else if a == 0 {
        Class::Unspecified
    } else if a == 127 {
        Class::Loopback
    } else if a == 169 && b == 254 {
        Class::LinkLocal
    } else if ip.is_broadcast() {
        Class::Broadcast
    } else if (224..=239).contains(&a) {
        Class::Multicast
    } else if a >= 240 {
        Class::Reserved
    } else if a == 10
        || (a == 172 && (16..=31).contains(&b))
        || (a == 192 && b == 168)
        || (a == 100 && (64..=127).contains(&b))
    {
        Class::Private
    } else {
        Class::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    let segments = ip.segments();
    let first = segments[0];
    if METADATA_V6.contains(&ip) {
        Class::Metadata
    } else if ip.is_unspecified() {
        Class::Unspecified
    } else if ip.is_loopback() {
        Class::Loopback
    } else if segments[..6] == [0; 6] {
        Class::Ipv4Compatible
    } else if segments[..3] == [0x64, 0xff9b, 0x0001] {
        Class::Nat64Local
    } else if first & 0xffc0 == 0xfe80 {
        Class::LinkLocal
    } else if first & 0xff00 == 0xff00 {
        Class::Multicast
    } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
        Class::Private
    } else {
        Class::Public
    }
}

/// A metadata service's name, whatever its case and with or without the trailing dot.
pub fn is_metadata_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    METADATA_HOSTS.contains(&host.as_str())
}

/// Why no request may ever go to `url`, when its host says so literally: an address of a class
/// that is always refused (in any spelling a URL parser accepts: `0xA9FEA9FE`, `2852039166`,
/// `[::ffff:a9fe:a9fe]`) or a metadata host name. `None` for anything else, including a URL
/// that does not parse: checking its form is the caller's business.
pub fn literal_refusal(url: &str) -> Option<String> {
    let parsed = Url::parse(url.trim()).ok()?;
    let (shown, class) = match parsed.host()? {
        Host::Domain(name) if is_metadata_host(name) => (name.to_owned(), Class::Metadata),
        Host::Domain(_) => return None,
        Host::Ipv4(v4) => (v4.to_string(), classify(IpAddr::V4(v4))),
        Host::Ipv6(v6) => (v6.to_string(), classify(IpAddr::V6(v6))),
    };
    class.always_refused().then(|| {
        format!(
            "{shown} is {}: Hangar never sends requests there (see docs/security.md)",
            class.describe()
        )
    })
}

/// Whether `url` is an absolute `http://` or `https://` URL with a host, as a request needs.
pub fn is_http_url(url: &str) -> bool {
    !url.chars().any(char::is_whitespace)
        && Url::parse(url).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        })
}

/// Whether two URLs share an origin: scheme, host and port (the scheme's default port when none
/// is written), compared as a URL parser normalises them (`HTTPS://API.example.com:443/v1` and
/// `https://api.example.com` are one origin). Credentials stored for one URL may go to the other
/// only then. A URL that does not parse, or has no host, shares no origin with anything.
pub fn same_origin(a: &str, b: &str) -> bool {
    match (Url::parse(a.trim()), Url::parse(b.trim())) {
        (Ok(a), Ok(b)) => {
            let (a, b) = (a.origin(), b.origin());
            a.is_tuple() && a == b
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Class {
        classify(s.parse().expect("an address"))
    }

    #[test]
    fn each_range_has_its_class() {
        for (addr, want) in [
            ("169.254.169.254", Class::Metadata),
            ("100.100.100.200", Class::Metadata),
            ("168.63.129.16", Class::Metadata),
            ("168.63.129.17", Class::Public),
            ("fd00:ec2::254", Class::Metadata),
            ("169.254.0.1", Class::LinkLocal),
            ("169.254.255.255", Class::LinkLocal),
            ("fe80::1", Class::LinkLocal),
            ("febf::1", Class::LinkLocal),
            ("0.0.0.0", Class::Unspecified),
            ("0.1.2.3", Class::Unspecified),
            ("::", Class::Unspecified),
            ("224.0.0.1", Class::Multicast),
            ("239.255.255.255", Class::Multicast),
            ("ff02::1", Class::Multicast),
            ("255.255.255.255", Class::Broadcast),
            ("240.0.0.1", Class::Reserved),
            ("127.0.0.1", Class::Loopback),
            ("127.255.0.9", Class::Loopback),
            ("::1", Class::Loopback),
            ("10.1.2.3", Class::Private),
            ("172.16.0.1", Class::Private),
            ("172.31.255.255", Class::Private),
            ("192.168.1.1", Class::Private),
            ("100.64.0.1", Class::Private),
            ("fd12:3456::1", Class::Private),
            ("fc00::1", Class::Private),
            ("8.8.8.8", Class::Public),
            ("172.32.0.1", Class::Public),
            ("100.128.0.1", Class::Public),
            ("169.253.255.255", Class::Public),
            ("2606:4700::1111", Class::Public),
            ("fec0::1", Class::Private),
        ] {
            assert_eq!(class(addr), want, "{addr}");
        }
    }

    #[test]
    fn ipv4_inside_ipv6_is_judged_as_ipv4() {
        assert_eq!(class("::ffff:169.254.169.254"), Class::Metadata);
        assert_eq!(class("::ffff:a9fe:a9fe"), Class::Metadata);
        assert_eq!(class("::ffff:127.0.0.1"), Class::Loopback);
        assert_eq!(class("::ffff:10.0.0.1"), Class::Private);
        assert_eq!(class("::ffff:169.254.1.1"), Class::LinkLocal);
        assert_eq!(class("64:ff9b::169.254.169.254"), Class::Metadata);
        assert_eq!(class("64:ff9b::8.8.8.8"), Class::Public);
        // `::1` is IPv6 loopback, not the IPv4-compatible 0.0.0.1.
        assert_eq!(class("::1"), Class::Loopback);
    }

    #[test]
    fn tunnelled_and_translated_forms_are_judged_or_refused() {
        // IPv4-compatible (deprecated): refused whatever IPv4 address it carries.
        for addr in [
            "::8.8.8.8",
            "::127.0.0.1",
            "::169.254.169.254",
            "::a9fe:a9fe",
            "::0.0.0.2",
        ] {
            assert_eq!(class(addr), Class::Ipv4Compatible, "{addr}");
            assert!(class(addr).always_refused(), "{addr}");
        }
        // 6to4: the IPv4 host in bits 16-48 is the one judged.
        assert_eq!(class("2002:a9fe:a9fe::1"), Class::Metadata);
        assert_eq!(class("2002:a9fe:0101::"), Class::LinkLocal);
        assert_eq!(class("2002:7f00:1::1"), Class::Loopback);
        assert_eq!(class("2002:0a00:0001:ffff::1"), Class::Private);
        assert_eq!(class("2002:0808:0808::1"), Class::Public);
        assert_eq!(
            canonical("2002:c0a8:0101::5".parse().expect("addr")),
            "192.168.1.1".parse::<IpAddr>().expect("addr")
        );
        // NAT64 local-use: refused; the well-known prefix next to it is still judged as IPv4.
        for addr in [
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1::808:808",
            "64:ff9b:1:ffff::1",
        ] {
            assert_eq!(class(addr), Class::Nat64Local, "{addr}");
            assert!(class(addr).always_refused(), "{addr}");
        }
        assert_eq!(class("64:ff9b::808:808"), Class::Public);
        assert_eq!(class("64:ff9b:2::1"), Class::Public);
        // Azure's WireServer, in any spelling.
        for addr in [
            "168.63.129.16",
            "::ffff:168.63.129.16",
            "2002:a83f:8110::",
            "64:ff9b::a83f:8110",
        ] {
            assert_eq!(class(addr), Class::Metadata, "{addr}");
        }
    }

    #[test]
    fn only_the_fixed_classes_are_always_refused() {
        let refused: Vec<Class> = [
            Class::Metadata,
            Class::LinkLocal,
            Class::Unspecified,
            Class::Multicast,
            Class::Broadcast,
            Class::Reserved,
            Class::Ipv4Compatible,
            Class::Nat64Local,
            Class::Loopback,
            Class::Private,
            Class::Public,
        ]
        .into_iter()
        .filter(|c| c.always_refused())
        .collect();
        assert_eq!(refused.len(), 8);
        assert!(!Class::Loopback.always_refused());
        assert!(!Class::Private.always_refused());
    }

    #[test]
    fn literal_urls_are_refused_in_every_spelling() {
        for url in [
            "http://169.254.169.254",
            "http://169.254.169.254/latest/meta-data/",
            "https://user:pw@169.254.169.254:8443/x",
            "http://0xA9FEA9FE/",
            "http://2852039166/",
            "http://0251.0376.0251.0376/",
            "http://169.254.169.254./",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:a9fe:a9fe]:80/",
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/",
            "http://[fe80::1]/",
            "http://0.0.0.0:8080/",
            "http://0/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.Google.Internal./",
            "http://metadata/",
            "http://instance-data/latest/",
            "http://168.63.129.16/machine?comp=goalstate",
            "http://[::a9fe:a9fe]/",
            "http://[::8.8.8.8]/",
            "http://[2002:a9fe:a9fe::]/",
            "http://[64:ff9b:1::808:808]/",
        ] {
            let why = literal_refusal(url).unwrap_or_else(|| panic!("{url} admitted"));
            assert!(why.contains("never sends requests there"), "{why}");
        }
    }

    #[test]
    fn ordinary_and_configurable_destinations_pass_the_literal_check() {
        for url in [
            "https://api.example.com/v1",
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://10.0.0.5/tools",
            "http://[::1]:8080/",
            "http://192.168.1.20",
            "http://metadata.example.com/",
            "not a url",
        ] {
            assert_eq!(literal_refusal(url), None, "{url}");
        }
    }

    #[test]
    fn http_urls_need_a_scheme_and_a_host() {
        assert!(is_http_url("http://x"));
        assert!(is_http_url("https://api.example.com/v1/"));
        assert!(!is_http_url("ftp://x"));
        assert!(!is_http_url("http://"));
        assert!(!is_http_url("https://exa mple.com"));
        assert!(!is_http_url("/relative"));
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        for (a, b) in [
            ("https://api.example.com", "https://api.example.com/v1/"),
            ("HTTPS://API.Example.com:443/v1", "https://api.example.com"),
            ("http://127.0.0.1:9000/v1", "http://127.0.0.1:9000"),
            ("http://[::1]:80/x", "http://[::1]"),
        ] {
            assert!(same_origin(a, b), "{a} and {b}");
        }
        for (a, b) in [
            ("https://api.example.com", "http://api.example.com"),
            ("https://api.example.com", "https://api.example.com:8443"),
            ("https://api.example.com", "https://evil.example.com"),
            (
                "https://api.example.com",
                "https://api.example.com.evil.net",
            ),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9001"),
            ("https://api.example.com", "not a url"),
            ("data:text/plain,x", "data:text/plain,x"),
        ] {
            assert!(!same_origin(a, b), "{a} and {b}");
        }
    }
}
