//! Which store a node serves from, and the node itself: its id, address and, in Postgres mode,
//! its heartbeat in the store's node table (`docs/cluster.md`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::runtime::Runtime;
use actors::Registry;

use chrono::{DateTime, Utc};
use events::store::{self, PgStore};

/// How often a node records that it is alive: well inside the timeout after which the others
/// count it dead (`events::store::pg::NODE_TIMEOUT_SECS`).
const HEARTBEAT: Duration = Duration::from_secs(3);

/// How often a node asks which agents other nodes changed: an undeploy elsewhere cancels this
/// node's runs within this (plus a round trip), under the contract's 1 s.
const CHANGES_POLL: Duration = Duration::from_millis(250);

/// How far back each changes poll looks past the previous one: a transaction's `now()` is its
/// start, so a write may commit a little after the time it carries.
const CHANGES_OVERLAP: chrono::Duration = chrono::Duration::seconds(5);

/// How often a node looks for dead nodes' runs and for queued runs nobody is taking.
const ADOPT_EVERY: Duration = Duration::from_secs(5);

/// What `--store` names.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreUrl {
    /// The embedded sled store in the data directory (the default).
    Sled,
    /// A PostgreSQL database, shared by every node of a cluster.
    Postgres(String),
}

impl StoreUrl {
    pub fn parse(url: Option<&str>) -> Result<StoreUrl, String> {
        match url.map(str::trim) {
            None | Some("") | Some("sled") => Ok(StoreUrl::Sled),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreUrl::Postgres(url.to_owned()))
            }
            Some(_) => Err(
                "--store (HANGAR_STORE) must be `sled` or a postgres:// URL (libpq form)".into(),
            ),
        }
    }
}

/// The node serving: its identity and what its store is.
pub struct Node {
    pub id: String,
    pub addr: String,
    pub started_at: DateTime<Utc>,
    pub store: NodeStore,
    /// Since when this node's heartbeats have succeeded without a break: a node that was cut
    /// off from the store itself must not judge others dead by their stale rows.
    pub beating_since: Mutex<Option<Instant>>,
}

pub enum NodeStore {
    Sled,
    Postgres(PgStore),
}

/// A member as `GET /v1/cluster` shows it.
pub struct Member {
    pub id: String,
    pub addr: String,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match self.store {
            NodeStore::Sled => "sled",
            NodeStore::Postgres(_) => "postgres",
        }
    }

    /// Whether the store answers now (sled: always, it is in the process).
    pub async fn store_reachable(&self) -> Result<(), store::Error> {
        match &self.store {
            NodeStore::Sled => Ok(()),
            NodeStore::Postgres(pg) => pg.ping().await,
        }
    }

    /// The live members: this node alone on sled; on Postgres, the nodes whose heartbeat is
    /// recent.
    pub async fn members(&self) -> Result<Vec<Member>, store::Error> {
        match &self.store {
            NodeStore::Sled => Ok(vec![Member {
                id: self.id.clone(),
                addr: self.addr.clone(),
                started_at: self.started_at,
                last_seen: Utc::now(),
            }]),
            NodeStore::Postgres(pg) => Ok(pg
                .live_nodes()
                .await?
                .into_iter()
                .map(|n| Member {
                    id: n.id,
                    addr: n.addr,
                    started_at: n.started_at,
                    last_seen: n.last_seen,
                })
                .collect()),
        }
    }

    /// Keeps this node's row fresh for as long as the process lives; a failed beat (the
    /// database away) is retried at the next one.
    pub fn start_heartbeat(self: &Arc<Self>) {
        let NodeStore::Postgres(pg) = &self.store else {
            return;
        };
        let (pg, addr, started_at) = (pg.clone(), self.addr.clone(), self.started_at);
        let node = self.clone();
        actix_web::rt::spawn(async move {
            let mut failing = false;
            loop {
                let beat = pg.heartbeat(addr.clone(), started_at).await;
                if let Ok(mut since) = node.beating_since.lock() {
                    match (&beat, *since) {
                        (Ok(()), None) => *since = Some(Instant::now()),
                        (Err(_), _) => *since = None,
                        _ => {}
                    }
                }
                match beat {
                    Ok(()) if failing => {
                        tracing::info!("the store answers again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        tracing::warn!(error = %e, "heartbeat failed; the store is unreachable");
                        failing = true;
                    }
                    Err(_) => {}
                }
                actix_web::rt::time::sleep(HEARTBEAT).await;
            }
        });
    }
}

impl Node {
    /// Whether this node has been in touch with the store long enough to tell dead nodes from
    /// its own outage.
    fn settled(&self) -> bool {
        let timeout = Duration::from_secs(store::pg::NODE_TIMEOUT_SECS as u64);
        self.beating_since
            .lock()
            .ok()
            .and_then(|s| *s)
            .is_some_and(|since| since.elapsed() > timeout)
    }

    /// Cluster mode's background work (`docs/cluster.md`): follow other nodes' changes to the
    /// agents this node serves, and adopt what dead nodes left (their running runs end
    /// `interrupted`; queued runs are claimed here).
    pub fn start_cluster_tasks(self: &Arc<Self>, runtime: Runtime, registry: Registry) {
        let NodeStore::Postgres(pg) = &self.store else {
            return;
        };
        let (pg, adopting, rt) = (pg.clone(), pg.clone(), runtime.clone());
        actix_web::rt::spawn(async move {
            let mut since = Utc::now() - CHANGES_OVERLAP;
            loop {
                actix_web::rt::time::sleep(CHANGES_POLL).await;
                let Ok((changed, now)) = pg.changed_streams(since - CHANGES_OVERLAP).await else {
                    continue;
                };
                since = now;
                for (agent, seq) in changed {
                    if registry.cached(agent).is_some_and(|s| s.seq >= seq) {
                        continue;
                    }
                    if let Err(e) = rt.changed_elsewhere(agent).await {
                        tracing::warn!(%agent, error = %e, "could not follow another node's change");
                    }
                }
            }
        });
        let (node, pg) = (self.clone(), adopting);
        actix_web::rt::spawn(async move {
            loop {
                actix_web::rt::time::sleep(ADOPT_EVERY).await;
                if !node.settled() {
                    continue;
                }
                match pg.orphaned_runs().await {
                    Ok(runs) if !runs.is_empty() => match runtime.interrupt(runs).await {
                        Ok(n) => {
                            tracing::warn!(runs = n, "ended a dead node's runs as interrupted")
                        }
                        Err(e) => tracing::warn!(error = %e, "could not end a dead node's runs"),
                    },
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "could not look for dead nodes' runs"),
                }
                if let Err(e) = runtime.restart_queues().await {
                    tracing::debug!(error = %e, "could not look at the queues");
                }
            }
        });
    }
}

/// The default node id: this host's name and the port it listens on.
pub fn default_node_id(addr: &std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| addr.ip().to_string());
    format!("{host}:{}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(StoreUrl::parse(None), Ok(StoreUrl::Sled));
        assert_eq!(StoreUrl::parse(Some("sled")), Ok(StoreUrl::Sled));
        let pg = "postgres://u@h1:5432,h2:5432/db?target_session_attrs=read-write";
        assert_eq!(
            StoreUrl::parse(Some(pg)),
            Ok(StoreUrl::Postgres(pg.to_owned()))
        );
        assert!(StoreUrl::parse(Some("mysql://x")).is_err());
    }
}
