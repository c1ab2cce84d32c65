//! The connector every outbound awc client uses: the [`Policy`] applied to the addresses a host
//! resolves to, right before the socket is opened.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;

use actix_rt::net::TcpStream;
use actix_service::Service;
use actix_tls::connect::tcp::TcpConnectorService;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection, Resolve};
use awc::http::Uri;
use futures_util::future::LocalBoxFuture;

use super::{current, Denied, Policy};

/// Looks a host up and keeps only the addresses `policy` allows; fails with [`Denied`] when
/// none is left. A literal address (with or without IPv6 brackets) is checked as it is.
pub struct Resolver {
    policy: Arc<Policy>,
}

impl Resolver {
    pub fn new(policy: Arc<Policy>) -> Self {
        Resolver { policy }
    }

    /// The allowed addresses of `host`, or why there are none.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return match self.policy.check(ip) {
                Ok(()) => Ok(vec![SocketAddr::new(ip, port)]),
                Err(reason) => Err(ResolveError::Denied(Denied {
                    host: bare.to_owned(),
                    addr: Some(ip),
                    reason,
                })),
            };
        }
        self.policy.check_name(bare).map_err(|reason| {
            ResolveError::Denied(Denied {
                host: bare.to_owned(),
                addr: None,
                reason,
            })
        })?;
        // The system resolver blocks; it runs on the blocking pool, as awc's own lookup does.
        let name = bare.to_owned();
        let found = actix_rt::task::spawn_blocking(move || {
            (name.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect::<Vec<_>>)
        })
        .await
        .map_err(|e| ResolveError::Lookup(std::io::Error::other(e.to_string())))?
        .map_err(ResolveError::Lookup)?;
        let mut refused = None;
        let allowed: Vec<SocketAddr> = found
            .iter()
            .filter(|addr| match self.policy.check(addr.ip()) {
                Ok(()) => true,
                Err(reason) => {
                    refused.get_or_insert((addr.ip(), reason));
                    false
                }
            })
            .copied()
            .collect();
        match (allowed.is_empty(), refused) {
            (false, _) => Ok(allowed),
            (true, Some((addr, reason))) => Err(ResolveError::Denied(Denied {
                host: bare.to_owned(),
                addr: Some(addr),
                reason,
            })),
            (true, None) => Err(ResolveError::Lookup(std::io::Error::other(format!(
                "{bare} has no address"
            )))),
        }
    }
}

/// Why a host has no address to connect to.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Denied(Denied),
    #[error("looking up the host failed: {0}")]
    Lookup(std::io::Error),
}

impl ResolveError {
    fn boxed(self) -> Box<dyn std::error::Error> {
        match self {
            ResolveError::Denied(denied) => Box::new(denied),
            ResolveError::Lookup(e) => Box::new(e),
        }
    }
}

impl Resolve for Resolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Box<dyn std::error::Error>>> {
        Box::pin(async move { self.resolve(host, port).await.map_err(ResolveError::boxed) })
    }
}

/// awc's TCP connector with the policy in front: every host, a name or a literal address, goes
/// through [`Resolver`], and the socket is opened only to the addresses it allowed. (actix-tls's
/// own resolver service skips a custom resolver for literal addresses, hence a connector of
/// our own rather than just `Resolver::custom`.)
#[derive(Clone)]
pub struct Connector {
    resolver: Rc<Resolver>,
    tcp: TcpConnectorService,
}

impl Connector {
    pub fn new(policy: Arc<Policy>) -> Self {
        Connector {
            resolver: Rc::new(Resolver::new(policy)),
            tcp: TcpConnectorService::default(),
        }
    }
}

impl Service<ConnectInfo<Uri>> for Connector {
    type Response = Connection<Uri, TcpStream>;
    type Error = ConnectError;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_service::always_ready!();

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let (resolver, tcp) = (self.resolver.clone(), self.tcp);
        Box::pin(async move {
            let host = req.hostname().to_owned();
            let addrs = resolver
                .resolve(&host, req.port())
                .await
                .map_err(|e| ConnectError::Resolver(e.boxed()))?;
            tcp.call(req.set_addrs(addrs)).await
        })
    }
}

/// awc's connector (TLS included) with the process's policy in front of every connection.
pub fn connector() -> awc::Connector<Connector> {
    connector_with(current())
}

/// [`connector`] with a given policy (tests).
pub fn connector_with(policy: Arc<Policy>) -> awc::Connector<Connector> {
    // awc's rustls needs a process-wide crypto provider; ring is the one this crate compiles in.
    // An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No cap on connections: awc's default of 100 would queue the 101st tool call of a busy
    // agent behind the others (each agent's max_concurrency is the real bound).
    awc::Connector::new()
        .limit(0)
        .connector(Connector::new(policy))
}

/// The refusal behind a failed request, if the policy is why it failed.
pub fn denied(error: &awc::error::SendRequestError) -> Option<&Denied> {
    match error {
        awc::error::SendRequestError::Connect(awc::error::ConnectError::Resolver(e)) => {
            e.downcast_ref::<Denied>()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use events::egress::Class;

    use super::super::Reason;
    use super::*;

    fn strict() -> Policy {
        Policy {
            allow_loopback: false,
            allow_private: false,
            deny: Vec::new(),
        }
    }

    #[actix_rt::test]
    async fn the_resolver_filters_what_names_and_literals_resolve_to() {
        let strict = Resolver::new(Arc::new(strict()));
        // `localhost` resolves through the system resolver: only loopback answers, all refused.
        let err = strict.resolve("localhost", 80).await.unwrap_err();
        let ResolveError::Denied(denied) = err else {
            panic!("{err}")
        };
        assert_eq!(denied.reason, Reason::Loopback);
        assert_eq!(denied.host, "localhost");
        assert!(denied.to_string().contains("resolves to"), "{denied}");
        for literal in ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]"] {
            let err = strict.resolve(literal, 80).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    ResolveError::Denied(Denied {
                        reason: Reason::Loopback,
                        ..
                    })
                ),
                "{literal}: {err}"
            );
        }
        // The numeric spellings the system resolver accepts are judged by what they mean.
        let any = Resolver::new(Arc::new(Policy::default()));
        for sneaky in ["2852039166", "0xa9fea9fe", "metadata.google.internal"] {
            let err = any.resolve(sneaky, 80).await.unwrap_err();
            assert!(
                matches!(&err, ResolveError::Denied(d) if matches!(d.reason, Reason::Always(Class::Metadata) | Reason::MetadataName)),
                "{sneaky}: {err}"
            );
        }
        let open = any
            .resolve("localhost", 8080)
            .await
            .expect("loopback allowed");
        assert!(open
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 8080));
        assert_eq!(
            any.resolve("[::1]", 1).await.unwrap(),
            vec!["[::1]:1".parse().unwrap()]
        );
    }

    /// The whole client: a request to a listening loopback port is refused before any byte is
    /// sent, with a [`Denied`] that [`denied`] finds in awc's error.
    #[actix_rt::test]
    async fn a_client_with_the_connector_never_reaches_a_refused_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = awc::Client::builder()
            .connector(connector_with(Arc::new(strict())))
            .finish();
        for url in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://localhost:{port}/"),
        ] {
            let err = client.get(&url).send().await.expect_err("refused");
            let why = denied(&err).unwrap_or_else(|| panic!("not an egress refusal: {err}"));
            assert_eq!(why.reason, Reason::Loopback);
        }
        assert!(listener.accept().is_err(), "no connection was opened");

        let open = awc::Client::builder()
            .connector(connector_with(Arc::new(Policy::default())))
            .finish();
        let err = open
            .get(format!("http://127.0.0.1:{port}/"))
            .timeout(std::time::Duration::from_millis(300))
            .send()
            .await;
        assert!(
            err.as_ref().map_or_else(|e| denied(e).is_none(), |_| true),
            "loopback allowed by default"
        );
        assert!(
            listener.accept().is_ok(),
            "the allowed connection was opened"
        );
    }
}
