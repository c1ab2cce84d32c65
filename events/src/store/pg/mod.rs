//! The PostgreSQL store: [`PgStore`] implements [`EventStore`](super::EventStore) (`log.rs`) and
//! the run stores (`runs.rs`) over one database that any number of Hangar nodes share.
//!
//! **Where the queries run.** tokio-postgres is async and its connections are tasks of a tokio
//! runtime; `EventStore` is synchronous and is called on actix arbiter threads (the agent actors)
//! and on HTTP workers, both of which are async executors. The store therefore owns a small
//! multi-threaded tokio runtime of its own (two workers): every query runs there. A run-store
//! method spawns its work on it and returns a future that awaits the task, so it can be awaited
//! on any executor; a synchronous `EventStore` call hands its work over and blocks the calling
//! thread on a plain channel until it is done, at most [`DEADLINE`]. That block is the cost of a
//! synchronous trait on a networked engine: one round trip (an append: one commit) of the
//! caller's thread, as sled's in-memory work already was; it never nests inside the store's own
//! runtime, so it cannot deadlock (`docs/cluster.md`, "Blocking calls").
//!
//! **Failures.** Every operation has a deadline ([`DEADLINE`]): a database that does not answer
//! makes it fail with [`Error::Unavailable`], which the API answers 503 with `Retry-After`. The
//! pool drops broken connections and opens new ones, so the store reconnects by itself once
//! PostgreSQL is back (also to a promoted standby named in a multi-host URL with
//! `target_session_attrs=read-write`).

mod log;
mod nodes;
mod runs;
mod schema;
#[cfg(any(test, feature = "conformance"))]
pub mod testing;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Timeouts};
use tokio::runtime::{Handle, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use super::runs::StoreFuture;
use super::Error;

pub use nodes::{NodeRecord, NODE_TIMEOUT_SECS};
pub use schema::SCHEMA_VERSION;

/// How long one store operation may take before it fails as [`Error::Unavailable`]: under the
/// 10 s in which the API promises an answer while the database is away.
pub const DEADLINE: Duration = Duration::from_secs(7);

/// Connections per node: the runtime's queries are short, and PostgreSQL's default
/// `max_connections` (100) must serve several nodes.
const POOL_SIZE: usize = 16;

type Result<T> = std::result::Result<T, Error>;

/// One PostgreSQL database holding everything durable. Cloning is cheap: clones share the pool
/// and the runtime.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    rt: Handle,
    node: Arc<str>,
    run_events: Arc<runs::RunEventOrder>,
    breaker: Arc<Breaker>,
    _runtime: Arc<OwnedRuntime>,
}

/// Fails operations fast while the database is away: after an operation found it unreachable,
/// others fail at once with [`Error::Unavailable`] except one probe per [`PROBE_EVERY`], so an
/// outage does not hold every HTTP worker and actor thread for a connect timeout each.
#[derive(Default)]
struct Breaker {
    /// Milliseconds since `epoch` when the database was last found away; 0 while it answers.
    down_at_ms: std::sync::atomic::AtomicU64,
    /// When the last probe was let through, in the same clock.
    probe_at_ms: std::sync::atomic::AtomicU64,
    epoch: std::sync::OnceLock<std::time::Instant>,
}

/// How often one operation is let through to find out whether the database is back.
const PROBE_EVERY: Duration = Duration::from_millis(250);

impl Breaker {
    fn now_ms(&self) -> u64 {
        let epoch = self.epoch.get_or_init(std::time::Instant::now);
        u64::try_from(epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Whether an operation may go to the database now.
    fn admit(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if self.down_at_ms.load(Relaxed) == 0 {
            return true;
        }
        let now = self.now_ms();
        let last = self.probe_at_ms.load(Relaxed);
        let due = now.saturating_sub(last) >= PROBE_EVERY.as_millis() as u64;
        due && self
            .probe_at_ms
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_ok()
    }

    fn record<T>(&self, result: &Result<T>) {
        use std::sync::atomic::Ordering::Relaxed;
        match result {
            Err(Error::Unavailable(_)) => {
                let _ = self
                    .down_at_ms
                    .compare_exchange(0, self.now_ms(), Relaxed, Relaxed);
            }
            _ => self.down_at_ms.store(0, Relaxed),
        }
    }
}

fn refused() -> Error {
    Error::Unavailable("PostgreSQL is unreachable; retrying in the background".into())
}

/// The store's runtime, shut down without waiting when the last clone goes (a runtime dropped
/// inside another's async context would panic).
struct OwnedRuntime(Option<Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connects to `url` (libpq URL or key=value forms, several hosts allowed), applies the
    /// schema migrations this build knows and refuses a schema newer than it. `node` names this
    /// process in the rows it claims (runs it runs) and in the node table.
    pub fn connect(url: &str, node: &str) -> Result<PgStore> {
        let store = PgStore::open(url, node)?;
        store.block(schema::migrate(store.pool.clone()))?;
        // Slots and threads an earlier process with this id held: that process is gone, and its runs end
        // as interrupted at start (`RunStore::running`).
        let pool = store.pool.clone();
        let me = node.to_string();
        store.block(async move {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .execute("DELETE FROM run_slots WHERE node = $1", &[&me])
                .await
                .map_err(pg_error)?;
            client
                .execute("DELETE FROM thread_holds WHERE node = $1", &[&me])
                .await
                .map_err(pg_error)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Connects to an existing Hangar database without migrating it (the offline tools): its
    /// schema must be the one this build writes.
    pub fn connect_existing(url: &str) -> Result<PgStore> {
        let store = PgStore::open(url, &format!("offline-{}", std::process::id()))?;
        store.block(schema::check(store.pool.clone()))?;
        Ok(store)
    }

    fn open(url: &str, node: &str) -> Result<PgStore> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Io(format!("the store URL is not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(3));
        }
        // Acknowledged means committed and flushed, whatever the server's default says.
        config.options("-c synchronous_commit=on");
        config.application_name("hangar");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hangar-pg")
            .enable_all()
            .build()
            .map_err(|e| Error::Io(format!("starting the store's runtime: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A connection that died with its server (a restart, a promotion) is found and
                // replaced before it is handed out.
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = {
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .timeouts(Timeouts {
                    wait: Some(Duration::from_secs(5)),
                    create: Some(Duration::from_secs(5)),
                    recycle: Some(Duration::from_secs(3)),
                })
                .build()
                .map_err(|e| Error::Io(format!("building the connection pool: {e}")))?
        };
        let store = PgStore {
            pool,
            rt: runtime.handle().clone(),
            node: node.into(),
            run_events: Arc::default(),
            breaker: Arc::default(),
            _runtime: Arc::new(OwnedRuntime(Some(runtime))),
        };
        Ok(store)
    }

    /// This node's id, as given to [`PgStore::connect`].
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Runs `work` on the store's runtime within [`DEADLINE`]; the future resolves with it and
    /// may be awaited on any executor.
    fn spawn<T, F>(&self, work: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        if !self.breaker.admit() {
            return Box::pin(std::future::ready(Err(refused())));
        }
        // The timeout is made inside the task: made here, its timer would need the caller's
        // runtime, and callers may have none (the retention thread builds this future before
        // its `block_on`; the crash program's cluster mode found it panicking there).
        let task = self
            .rt
            .spawn(async move { tokio::time::timeout(DEADLINE, work).await });
        let breaker = self.breaker.clone();
        Box::pin(async move {
            let result = match task.await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(deadline_passed()),
                Err(e) if e.is_cancelled() => Err(Error::Closed),
                Err(e) => Err(Error::Io(format!("a store task failed: {e}"))),
            };
            breaker.record(&result);
            result
        })
    }

    /// Runs `work` on the store's runtime and blocks the calling thread until it is done (at
    /// most [`DEADLINE`]). Never called from the store's own runtime.
    fn block<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        if !self.breaker.admit() {
            return Err(refused());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let result = match tokio::time::timeout(DEADLINE, work).await {
                Ok(result) => result,
                Err(_) => Err(deadline_passed()),
            };
            let _ = tx.send(result);
        });
        let result = rx.recv().map_err(|_| Error::Closed)?;
        self.breaker.record(&result);
        result
    }

    /// Whether the database answers now (for `GET /healthz`), within [`DEADLINE`].
    pub fn ping(&self) -> StoreFuture<()> {
        let pool = self.pool.clone();
        self.spawn(async move {
            let client = pool.get().await.map_err(pool_error)?;
            client.simple_query("SELECT 1").await.map_err(pg_error)?;
            Ok(())
        })
    }
}

fn deadline_passed() -> Error {
    Error::Unavailable(format!(
        "PostgreSQL did not answer within {} s",
        DEADLINE.as_secs()
    ))
}

/// A pool failure: no connection could be had (the server is down, unreachable, or full).
fn pool_error(e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => pg_error(e),
        other => Error::Unavailable(format!("no connection to PostgreSQL: {other}")),
    }
}

/// A database error: the connection's failure is the database being away (503), an error the
/// server reports about a statement is Hangar's fault (500).
fn pg_error(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) if is_server_going_away(db.code()) => {
            Error::Unavailable(format!("PostgreSQL: {}", db.message()))
        }
        Some(db) => Error::Io(format!(
            "PostgreSQL: {}: {}",
            db.code().code(),
            db.message()
        )),
        None => Error::Unavailable(format!("PostgreSQL connection: {e}")),
    }
}

/// Errors of a server that is shutting down, starting, or read-only (a standby not yet
/// promoted): the database is away for now, not wrong.
fn is_server_going_away(code: &SqlState) -> bool {
    [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::READ_ONLY_SQL_TRANSACTION,
        SqlState::TOO_MANY_CONNECTIONS,
    ]
    .contains(code)
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

#[cfg(test)]
mod tests;
