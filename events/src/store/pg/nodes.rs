//! Node membership: each `hangar serve` on the store keeps a row in `nodes` fresh with a
//! heartbeat; a node not seen for [`NODE_TIMEOUT_SECS`] is dead, and the runs it was running are left
//! behind (`RunStore::running` lists them for the others to end).

use chrono::{DateTime, Utc};

use super::{pg_error, pool_error, PgStore};
use crate::run::StoredRun;
use crate::store::runs::StoreFuture;
use crate::store::Error;

/// How long a node may go without a heartbeat before the others count it dead.
pub const NODE_TIMEOUT_SECS: i64 = 15;

/// A member of the cluster, as its last heartbeat left it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub id: String,
    pub addr: String,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

impl PgStore {
    /// Records that this node is alive now (first call: joins the table).
    pub fn heartbeat(&self, addr: String, started_at: DateTime<Utc>) -> StoreFuture<()> {
        let store = self.clone();
        self.spawn(async move {
            let client = store.pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "INSERT INTO nodes (id, addr, started_at, last_seen) VALUES ($1, $2, $3, now())
                     ON CONFLICT (id) DO UPDATE SET addr = EXCLUDED.addr,
                         started_at = EXCLUDED.started_at, last_seen = now()",
                    &[&store.node(), &addr, &started_at],
                )
                .await
                .map_err(pg_error)?;
            Ok(())
        })
    }

    /// The nodes seen within [`NODE_TIMEOUT_SECS`], by id.
    pub fn live_nodes(&self) -> StoreFuture<Vec<NodeRecord>> {
        let pool = self.pool.clone();
        self.spawn(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query(
                    "SELECT id, addr, started_at, last_seen FROM nodes
                     WHERE last_seen > now() - make_interval(secs => $1) ORDER BY id",
                    &[&(NODE_TIMEOUT_SECS as f64)],
                )
                .await
                .map_err(pg_error)?;
            Ok(rows
                .iter()
                .map(|row| NodeRecord {
                    id: row.get(0),
                    addr: row.get(1),
                    started_at: row.get(2),
                    last_seen: row.get(3),
                })
                .collect())
        })
    }

    /// Runs left `running` by nodes that are no longer alive (not this one): a dead node's
    /// runs, for a live node to end as interrupted.
    pub fn orphaned_runs(&self) -> StoreFuture<Vec<StoredRun>> {
        let store = self.clone();
        self.spawn(async move {
            let client = store.pool.get().await.map_err(pool_error)?;
            let rows = client
                .query(
                    "SELECT body FROM runs WHERE status = 'running' AND node <> $1
                       AND node NOT IN (SELECT id FROM nodes
                           WHERE last_seen > now() - make_interval(secs => $2))",
                    &[&store.node(), &(NODE_TIMEOUT_SECS as f64)],
                )
                .await
                .map_err(pg_error)?;
            rows.iter()
                .map(|row| {
                    serde_json::from_slice(row.get::<_, &[u8]>(0))
                        .map_err(|e| Error::Io(format!("unreadable run: {e}")))
                })
                .collect()
        })
    }

    /// Removes this node's row (a clean stop), so that it leaves the cluster at once.
    pub fn leave(&self) -> StoreFuture<()> {
        let store = self.clone();
        self.spawn(async move {
            let client = store.pool.get().await.map_err(pool_error)?;
            client
                .execute("DELETE FROM nodes WHERE id = $1", &[&store.node()])
                .await
                .map_err(pg_error)?;
            Ok(())
        })
    }
}
