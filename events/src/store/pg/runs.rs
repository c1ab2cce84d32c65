//! The run stores in PostgreSQL: [`RunStore`], [`RunEventStore`] and [`ThreadStore`].
//!
//! | table | key | what |
//! |---|---|---|
//! | `runs` | `rid` | the `StoredRun` JSON in `body`, and the columns queries filter on (`agent`, `status`, `created_at`, `finished_at`, `push_pending`, `keyed`, `node`) |
//! | `run_queue` | `(agent, rid)` | one row per queued run: request ids are UUID v7, so a queue is FIFO |
//! | `idempotency` | `(agent, caller, key)` | the request a key names and when it was accepted (unix ms) |
//! | `push_outbox` | `(due_ms, rid)` | due deliveries, earliest first |
//! | `run_events` | `(rid, seq)` | `{type, data, at}` JSON |
//! | `thread_turns` | `(agent, thread, seq)` | the `Turn` JSON |
//! | `run_slots` | `(agent, rid)` | the runs holding one of their agent's `max_concurrency` slots, and the node running each |
//! | `thread_holds` | `(agent, thread)` | the run holding a conversation thread (its turn), and the node running it |
//!
//! Every write is one transaction, committed (and so durable: `synchronous_commit = on`) before
//! its future resolves. Claims take queue rows with `FOR UPDATE SKIP LOCKED`, so nodes claiming
//! one agent's queue at once never block each other nor get the same run.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{is_unique_violation, pg_error, pool_error, PgStore, Result};
use crate::run::{
    A2aPushChange, PushStatus, RunError, RunEvent, RunStatus, StoredPush, StoredRun, ThreadOf, Turn,
};
use crate::store::runs::{
    Accepted, DuePush, RunEventStore, RunStore, StoreFuture, ThreadStore, IDEMPOTENCY_WINDOW,
    THREAD_WAIT,
};
use crate::store::Error;

/// Runs removed per transaction by a purge, so that it never holds many row locks for long.
const PURGE_BATCH: i64 = 500;

/// How long a node holds the push outbox entries it took: past a delivery's timeout.
const PUSH_LEASE_SECS: f64 = 60.0;

/// How often an insert that numbers a row (a run event, a turn) is retried when another node
/// took the same number first.
const NUMBERING_ATTEMPTS: usize = 8;

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Io(format!("unencodable record: {e}")))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Io(format!("unreadable record: {e}")))
}

fn bigint(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn from_millis(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| Error::Io(format!("{ms} is not a time")))
}

/// The columns of a `runs` row, derived from the run each time it is written.
struct RunRow {
    rid: Uuid,
    agent: Uuid,
    status: &'static str,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    push_pending: bool,
    keyed: bool,
    /// The run's thread scope: `delete_thread` erases the runs it names.
    thread: Option<String>,
    body: Vec<u8>,
}

impl RunRow {
    fn of(run: &StoredRun) -> Result<RunRow> {
        Ok(RunRow {
            rid: run.run.request_id,
            agent: run.run.agent_id,
            status: run.run.status.as_str(),
            created_at: run.run.created_at,
            finished_at: run.run.finished_at,
            push_pending: run
                .run
                .push
                .as_ref()
                .is_some_and(|p| p.status == PushStatus::Pending),
            keyed: run.idempotency_key.is_some(),
            thread: run.thread_key(),
            body: encode(run)?,
        })
    }

    /// Inserts or replaces the row; `node` is who runs it, when it is running.
    async fn upsert(&self, client: &impl GenericClient, node: Option<&str>) -> Result<()> {
        let params: [&(dyn ToSql + Sync); 10] = [
            &self.rid,
            &self.agent,
            &self.status,
            &self.created_at,
            &self.finished_at,
            &self.push_pending,
            &self.keyed,
            &node,
            &self.body,
            &self.thread,
        ];
        client
            .execute(
                "INSERT INTO runs (rid, agent, status, created_at, finished_at, push_pending,
                                   keyed, node, body, thread)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (rid) DO UPDATE SET agent = EXCLUDED.agent,
                     status = EXCLUDED.status, created_at = EXCLUDED.created_at,
                     finished_at = EXCLUDED.finished_at, push_pending = EXCLUDED.push_pending,
                     keyed = EXCLUDED.keyed, node = EXCLUDED.node, body = EXCLUDED.body,
                     thread = EXCLUDED.thread",
                &params,
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }
}

fn run_of(row: &Row) -> Result<StoredRun> {
    decode(row.get::<_, &[u8]>("body"))
}

async fn get_run(client: &impl GenericClient, rid: Uuid) -> Result<Option<StoredRun>> {
    let row = client
        .query_opt("SELECT body FROM runs WHERE rid = $1", &[&rid])
        .await
        .map_err(pg_error)?;
    row.as_ref().map(run_of).transpose()
}

/// A run, locked until the transaction ends.
async fn lock_run(client: &impl GenericClient, rid: Uuid) -> Result<Option<StoredRun>> {
    let row = client
        .query_opt("SELECT body FROM runs WHERE rid = $1 FOR UPDATE", &[&rid])
        .await
        .map_err(pg_error)?;
    row.as_ref().map(run_of).transpose()
}

fn caller_of(caller: Option<&str>) -> &str {
    caller.unwrap_or("")
}

async fn accept(store: PgStore, run: StoredRun, enqueue: bool) -> Result<Accepted> {
    let row = RunRow::of(&run)?;
    let mut client = store.pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    if let Some(key) = &run.idempotency_key {
        let caller = caller_of(run.caller.as_deref());
        let now_ms = millis(run.run.created_at);
        // Of racing accepts with one key, one inserts; the others' inserts wait for it to commit
        // and then do nothing, and read what it wrote.
        let inserted = tx
            .execute(
                "INSERT INTO idempotency (agent, caller, key, rid, accepted_ms)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&row.agent, &caller, key, &row.rid, &now_ms],
            )
            .await
            .map_err(pg_error)?;
        if inserted == 0 {
            let found = tx
                .query_one(
                    "SELECT rid, accepted_ms FROM idempotency
                     WHERE agent = $1 AND caller = $2 AND key = $3 FOR UPDATE",
                    &[&row.agent, &caller, key],
                )
                .await
                .map_err(pg_error)?;
            let (existing, at_ms): (Uuid, i64) = (found.get(0), found.get(1));
            let fresh = now_ms - at_ms < IDEMPOTENCY_WINDOW.num_milliseconds();
            if let (true, Some(found)) = (fresh, get_run(&tx, existing).await?) {
                return Ok(Accepted::repeat_of(found, &run));
            }
            // The key is past its window (or its run is gone): it names this request now.
            tx.execute(
                "UPDATE idempotency SET rid = $4, accepted_ms = $5
                 WHERE agent = $1 AND caller = $2 AND key = $3",
                &[&row.agent, &caller, key, &row.rid, &now_ms],
            )
            .await
            .map_err(pg_error)?;
        }
    }
    let node = (run.run.status == RunStatus::Running).then_some(store.node());
    row.upsert(&tx, node).await?;
    if enqueue {
        tx.execute(
            "INSERT INTO run_queue (agent, rid) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&row.agent, &row.rid],
        )
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(Accepted::New)
}

/// The A2A push config and push state of run `rid` as stored, locked until the transaction
/// ends: what a write of the whole run keeps (`RunStore::finish`).
async fn lock_stored_push(client: &impl GenericClient, rid: Uuid) -> Result<Option<StoredPush>> {
    let row = client
        .query_opt("SELECT body FROM runs WHERE rid = $1 FOR UPDATE", &[&rid])
        .await
        .map_err(pg_error)?;
    row.map(|row| decode(row.get::<_, &[u8]>("body")))
        .transpose()
}

async fn finish(store: PgStore, run: StoredRun, push_due: Option<DateTime<Utc>>) -> Result<()> {
    let mut client = store.pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let stored = lock_stored_push(&tx, run.run.request_id).await?;
    let (run, push_due) = match stored.and_then(|s| run.with_stored_push(&s, push_due)) {
        Some(merged) => merged,
        None => (run, push_due),
    };
    let row = RunRow::of(&run)?;
    row.upsert(&tx, None).await?;
    tx.execute(
        "DELETE FROM run_queue WHERE agent = $1 AND rid = $2",
        &[&row.agent, &row.rid],
    )
    .await
    .map_err(pg_error)?;
    free_slot(&tx, row.agent, row.rid).await?;
    if let Some(due) = push_due {
        tx.execute(
            "INSERT INTO push_outbox (due_ms, rid) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&millis(due), &row.rid],
        )
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)
}

/// The advisory lock class of the run slots (the second key is the agent's hash): the
/// transaction-scoped lock serializes the counting of one agent's slots, and goes with the
/// transaction, whatever becomes of the pooled connection.
const SLOTS_LOCK_CLASS: i32 = 0x4847_5301;

/// Locks `agent`'s slots until the transaction ends, drops those of nodes no longer alive (their
/// lease ended with their heartbeat) and counts the rest.
async fn held_slots(tx: &impl GenericClient, store: &PgStore, agent: Uuid) -> Result<usize> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2::uuid::text))",
        &[&SLOTS_LOCK_CLASS, &agent],
    )
    .await
    .map_err(pg_error)?;
    tx.execute(
        "DELETE FROM run_slots WHERE agent = $1 AND node <> $2 AND node NOT IN (
             SELECT id FROM nodes WHERE last_seen > now() - make_interval(secs => $3))",
        &[&agent, &store.node(), &(super::NODE_TIMEOUT_SECS as f64)],
    )
    .await
    .map_err(pg_error)?;
    let row = tx
        .query_one("SELECT count(*) FROM run_slots WHERE agent = $1", &[&agent])
        .await
        .map_err(pg_error)?;
    Ok(count(row.get(0)))
}

async fn hold_slot(tx: &impl GenericClient, store: &PgStore, agent: Uuid, rid: Uuid) -> Result<()> {
    tx.execute(
        "INSERT INTO run_slots (agent, rid, node) VALUES ($1, $2, $3)
         ON CONFLICT (agent, rid) DO UPDATE SET node = EXCLUDED.node",
        &[&agent, &rid, &store.node()],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

async fn free_slot(tx: &impl GenericClient, agent: Uuid, rid: Uuid) -> Result<()> {
    tx.execute(
        "DELETE FROM run_slots WHERE agent = $1 AND rid = $2",
        &[&agent, &rid],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

async fn take_slot(store: PgStore, agent: Uuid, rid: Uuid, limit: usize) -> Result<bool> {
    let mut client = store.pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let mine = tx
        .query_opt(
            "SELECT 1 FROM run_slots WHERE agent = $1 AND rid = $2",
            &[&agent, &rid],
        )
        .await
        .map_err(pg_error)?
        .is_some();
    let taken = mine || held_slots(&tx, &store, agent).await? < limit;
    if taken {
        hold_slot(&tx, &store, agent, rid).await?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(taken)
}

/// In one transaction: `rid` takes the thread if it holds it already, or if it is free (or held
/// by a node no longer alive) and no older run waits for it; otherwise it waits (its wait's
/// `seen_at` renewed). Of racing inserts of the hold, one wins; the others wait for its commit
/// and then take over only a hold of their own run or of a dead node.
async fn take_thread(store: PgStore, agent: Uuid, thread: String, rid: Uuid) -> Result<bool> {
    let mut client = store.pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let holder = tx
        .query_opt(
            "SELECT rid FROM thread_holds WHERE agent = $1 AND thread = $2",
            &[&agent, &thread],
        )
        .await
        .map_err(pg_error)?;
    if holder.is_some_and(|row| row.get::<_, Uuid>(0) == rid) {
        return Ok(true);
    }
    let wait_secs = THREAD_WAIT.num_milliseconds() as f64 / 1000.0;
    let held = tx
        .query_opt(
            "INSERT INTO thread_holds AS h (agent, thread, rid, node)
             SELECT $1, $2, $3, $4 WHERE NOT EXISTS (
                 SELECT 1 FROM thread_waits w WHERE w.agent = $1 AND w.thread = $2
                     AND w.rid < $3 AND w.seen_at > now() - make_interval(secs => $6))
             ON CONFLICT (agent, thread) DO UPDATE
                 SET rid = EXCLUDED.rid, node = EXCLUDED.node, taken_at = now()
                 WHERE h.node <> EXCLUDED.node AND h.node NOT IN (
                     SELECT id FROM nodes WHERE last_seen > now() - make_interval(secs => $5))
             RETURNING rid",
            &[
                &agent,
                &thread,
                &rid,
                &store.node(),
                &(super::NODE_TIMEOUT_SECS as f64),
                &wait_secs,
            ],
        )
        .await
        .map_err(pg_error)?
        .is_some();
    if held {
        tx.execute(
            "DELETE FROM thread_waits WHERE agent = $1 AND thread = $2 AND rid = $3",
            &[&agent, &thread, &rid],
        )
        .await
        .map_err(pg_error)?;
    } else {
        tx.execute(
            "INSERT INTO thread_waits (agent, thread, rid, node) VALUES ($1, $2, $3, $4)
             ON CONFLICT (agent, thread, rid) DO UPDATE SET seen_at = now()",
            &[&agent, &thread, &rid, &store.node()],
        )
        .await
        .map_err(pg_error)?;
        // Waits that stopped long ago: gone, so that the table does not grow.
        tx.execute(
            "DELETE FROM thread_waits WHERE agent = $1 AND thread = $2
                 AND seen_at < now() - make_interval(secs => $3)",
            &[&agent, &thread, &(wait_secs * 10.0)],
        )
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(held)
}

async fn claim(store: PgStore, agent: Uuid, max: usize) -> Result<Vec<StoredRun>> {
    claim_within(store, agent, max, None).await
}

/// Claims up to `max` queued runs; with `limit`, no more than `agent`'s free slots, each
/// claimed run taking one in the same transaction.
async fn claim_within(
    store: PgStore,
    agent: Uuid,
    max: usize,
    limit: Option<usize>,
) -> Result<Vec<StoredRun>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let mut client = store.pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let max = match limit {
        Some(limit) => max.min(limit.saturating_sub(held_slots(&tx, &store, agent).await?)),
        None => max,
    };
    if max == 0 {
        return Ok(Vec::new());
    }
    let taken = tx
        .query(
            "DELETE FROM run_queue WHERE (agent, rid) IN (
                 SELECT agent, rid FROM run_queue WHERE agent = $1
                 ORDER BY rid LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING rid",
            &[&agent, &bigint(max)],
        )
        .await
        .map_err(pg_error)?;
    let mut rids: Vec<Uuid> = taken.iter().map(|row| row.get(0)).collect();
    rids.sort();
    let mut claimed = Vec::with_capacity(rids.len());
    for rid in rids {
        let Some(mut run) = lock_run(&tx, rid).await? else {
            continue; // a dangling queue entry: dropped
        };
        if run.run.status != RunStatus::Queued {
            continue;
        }
        run.run.status = RunStatus::Running;
        run.run.started_at = Some(Utc::now());
        RunRow::of(&run)?.upsert(&tx, Some(store.node())).await?;
        if limit.is_some() {
            hold_slot(&tx, &store, agent, rid).await?;
        }
        claimed.push(run);
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(claimed)
}

async fn cancel_queued(
    store: PgStore,
    agent: Uuid,
    rid: Uuid,
    error: RunError,
) -> Result<Option<StoredRun>> {
    let mut client = store.pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let dequeued = tx
        .execute(
            "DELETE FROM run_queue WHERE agent = $1 AND rid = $2",
            &[&agent, &rid],
        )
        .await
        .map_err(pg_error)?;
    if dequeued == 0 {
        return Ok(None);
    }
    let Some(mut run) = lock_run(&tx, rid).await? else {
        tx.commit().await.map_err(pg_error)?;
        return Ok(None);
    };
    run.finish(RunStatus::Cancelled, None, Some(error));
    if let Some(due) = run.schedule_push() {
        tx.execute(
            "INSERT INTO push_outbox (due_ms, rid) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&millis(due), &rid],
        )
        .await
        .map_err(pg_error)?;
    }
    RunRow::of(&run)?.upsert(&tx, None).await?;
    tx.commit().await.map_err(pg_error)?;
    Ok(Some(run))
}

async fn resume(store: PgStore, agent: Uuid, rid: Uuid) -> Result<Option<StoredRun>> {
    let mut client = store.pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let Some(mut run) = lock_run(&tx, rid).await? else {
        return Ok(None);
    };
    if run.run.agent_id != agent || run.run.status != RunStatus::InputRequired {
        return Ok(None);
    }
    run.run.status = RunStatus::Running;
    run.run.pending = None;
    RunRow::of(&run)?.upsert(&tx, Some(store.node())).await?;
    tx.commit().await.map_err(pg_error)?;
    Ok(Some(run))
}

async fn change_a2a_push(
    store: PgStore,
    rid: Uuid,
    change: A2aPushChange,
) -> Result<Option<StoredRun>> {
    let mut client = store.pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let Some(mut run) = lock_run(&tx, rid).await? else {
        return Ok(None);
    };
    let Some(change) = run.change_a2a_push(change) else {
        return Ok(Some(run));
    };
    if let Some(due) = change.remove {
        tx.execute(
            "DELETE FROM push_outbox WHERE due_ms = $1 AND rid = $2",
            &[&millis(due), &rid],
        )
        .await
        .map_err(pg_error)?;
    }
    if let Some(due) = change.add {
        tx.execute(
            "INSERT INTO push_outbox (due_ms, rid) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&millis(due), &rid],
        )
        .await
        .map_err(pg_error)?;
    }
    // A running run keeps the node that runs it.
    let node = tx
        .query_opt("SELECT node FROM runs WHERE rid = $1", &[&rid])
        .await
        .map_err(pg_error)?
        .and_then(|row| row.get::<_, Option<String>>("node"));
    RunRow::of(&run)?.upsert(&tx, node.as_deref()).await?;
    tx.commit().await.map_err(pg_error)?;
    Ok(Some(run))
}

async fn reschedule_push(
    store: PgStore,
    entry: DuePush,
    run: StoredRun,
    next: Option<DateTime<Utc>>,
) -> Result<()> {
    let mut client = store.pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let stored = lock_stored_push(&tx, run.run.request_id).await?;
    let moot = stored.filter(|s| s.a2a_push != run.a2a_push);
    // The config changed during the attempt: it was for a config gone. Its entry goes, unless
    // it is (to the millisecond) the new config's own.
    if moot.as_ref().is_none_or(|s| !s.is_due_at(entry.due)) {
        tx.execute(
            "DELETE FROM push_outbox WHERE due_ms = $1 AND rid = $2",
            &[&millis(entry.due), &entry.rid],
        )
        .await
        .map_err(pg_error)?;
    }
    if moot.is_some() {
        return tx.commit().await.map_err(pg_error);
    }
    let row = RunRow::of(&run)?;
    row.upsert(&tx, None).await?;
    if let Some(next) = next {
        tx.execute(
            "INSERT INTO push_outbox (due_ms, rid) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&millis(next), &row.rid],
        )
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)
}

async fn purge(store: PgStore, cutoff: DateTime<Utc>) -> Result<usize> {
    let key_cutoff = Utc::now() - IDEMPOTENCY_WINDOW;
    let mut client = store.pool.get().await.map_err(pool_error)?;
    let mut purged = 0;
    loop {
        let tx = client.transaction().await.map_err(pg_error)?;
        let gone = tx
            .query(
                "DELETE FROM runs WHERE rid IN (
                     SELECT rid FROM runs
                     WHERE finished_at < $1
                       AND status NOT IN ('queued', 'running', 'input_required')
                       AND NOT push_pending
                       AND NOT (keyed AND created_at > $2)
                     LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING rid",
                &[&cutoff, &key_cutoff, &PURGE_BATCH],
            )
            .await
            .map_err(pg_error)?;
        let rids: Vec<Uuid> = gone.iter().map(|row| row.get(0)).collect();
        tx.execute("DELETE FROM run_events WHERE rid = ANY($1)", &[&rids])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        purged += rids.len();
        if bigint(rids.len()) < PURGE_BATCH {
            break;
        }
    }
    client
        .execute(
            "DELETE FROM idempotency WHERE accepted_ms < $1",
            &[&millis(key_cutoff)],
        )
        .await
        .map_err(pg_error)?;
    Ok(purged)
}

impl RunStore for PgStore {
    fn accept(&self, run: StoredRun, enqueue: bool) -> StoreFuture<Accepted> {
        self.spawn(accept(self.clone(), run, enqueue))
    }

    fn get(&self, rid: Uuid) -> StoreFuture<Option<StoredRun>> {
        let pool = self.pool.clone();
        self.spawn(async move {
            let client = pool.get().await.map_err(pool_error)?;
            get_run(&client, rid).await
        })
    }

    fn list_runs(
        &self,
        agent: Uuid,
        before: Option<Uuid>,
        limit: usize,
    ) -> StoreFuture<Vec<StoredRun>> {
        let pool = self.pool.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.spawn(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query(
                    "SELECT body FROM runs WHERE agent = $1 AND ($2::uuid IS NULL OR rid < $2)
                     ORDER BY rid DESC LIMIT $3",
                    &[&agent, &before, &limit],
                )
                .await
                .map_err(pg_error)?;
            rows.iter()
                .map(|row| decode(row.get::<_, &[u8]>("body")))
                .collect()
        })
    }

    fn find_by_key(
        &self,
        agent: Uuid,
        caller: Option<String>,
        key: String,
        at: DateTime<Utc>,
    ) -> StoreFuture<Option<StoredRun>> {
        let pool = self.pool.clone();
        self.spawn(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let since = millis(at) - IDEMPOTENCY_WINDOW.num_milliseconds();
            let row = client
                .query_opt(
                    "SELECT r.body FROM idempotency i JOIN runs r ON r.rid = i.rid
                     WHERE i.agent = $1 AND i.caller = $2 AND i.key = $3 AND i.accepted_ms > $4",
                    &[&agent, &caller_of(caller.as_deref()), &key, &since],
                )
                .await
                .map_err(pg_error)?;
            row.as_ref().map(run_of).transpose()
        })
    }

    fn put(&self, mut run: StoredRun) -> StoreFuture<()> {
        let store = self.clone();
        self.spawn(async move {
            let mut client = store.pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            if let Some(stored) = lock_stored_push(&tx, run.run.request_id).await? {
                run.a2a_push = stored.a2a_push;
            }
            let row = RunRow::of(&run)?;
            let node = (run.run.status == RunStatus::Running).then_some(store.node());
            row.upsert(&tx, node).await?;
            tx.commit().await.map_err(pg_error)
        })
    }

    fn finish(&self, run: StoredRun, push_due: Option<DateTime<Utc>>) -> StoreFuture<()> {
        self.spawn(finish(self.clone(), run, push_due))
    }

    fn change_a2a_push(&self, rid: Uuid, change: A2aPushChange) -> StoreFuture<Option<StoredRun>> {
        self.spawn(change_a2a_push(self.clone(), rid, change))
    }

    /// As durable as every other write: the run and its slot's release in one commit.
    fn record(&self, run: StoredRun) -> StoreFuture<()> {
        let store = self.clone();
        self.spawn(async move {
            let row = RunRow::of(&run)?;
            let mut client = store.pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            row.upsert(&tx, None).await?;
            free_slot(&tx, row.agent, row.rid).await?;
            tx.commit().await.map_err(pg_error)
        })
    }

    fn claim(&self, agent: Uuid, max: usize) -> StoreFuture<Vec<StoredRun>> {
        self.spawn(claim(self.clone(), agent, max))
    }

    fn slots_are_shared(&self) -> bool {
        true
    }

    fn take_slot(&self, agent: Uuid, rid: Uuid, limit: usize) -> StoreFuture<bool> {
        self.spawn(take_slot(self.clone(), agent, rid, limit))
    }

    fn release_slot(&self, agent: Uuid, rid: Uuid) -> StoreFuture<()> {
        let pool = self.pool.clone();
        self.spawn(async move {
            let client = pool.get().await.map_err(pool_error)?;
            free_slot(&client, agent, rid).await
        })
    }

    fn take_thread(&self, agent: Uuid, thread: String, rid: Uuid) -> StoreFuture<bool> {
        self.spawn(take_thread(self.clone(), agent, thread, rid))
    }

    fn release_thread(&self, agent: Uuid, thread: String, rid: Uuid) -> StoreFuture<()> {
        let pool = self.pool.clone();
        self.spawn(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            for table in ["thread_holds", "thread_waits"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE agent = $1 AND thread = $2 AND rid = $3"),
                    &[&agent, &thread, &rid],
                )
                .await
                .map_err(pg_error)?;
            }
            tx.commit().await.map_err(pg_error)
        })
    }

    fn claim_in_slots(&self, agent: Uuid, max: usize, limit: usize) -> StoreFuture<Vec<StoredRun>> {
        self.spawn(claim_within(self.clone(), agent, max, Some(limit)))
    }

    fn cancel_queued(
        &self,
        agent: Uuid,
        rid: Uuid,
        error: RunError,
    ) -> StoreFuture<Option<StoredRun>> {
        self.spawn(cancel_queued(self.clone(), agent, rid, error))
    }

    fn resume(&self, agent: Uuid, rid: Uuid) -> StoreFuture<Option<StoredRun>> {
        self.spawn(resume(self.clone(), agent, rid))
    }

    fn queued(&self, agent: Uuid) -> StoreFuture<usize> {
        let pool = self.pool.clone();
        self.spawn(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_one("SELECT COUNT(*) FROM run_queue WHERE agent = $1", &[&agent])
                .await
                .map_err(pg_error)?;
            Ok(count(row.get(0)))
        })
    }

    fn queue_len(&self) -> StoreFuture<usize> {
        let pool = self.pool.clone();
        self.spawn(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_one("SELECT COUNT(*) FROM run_queue", &[])
                .await
                .map_err(pg_error)?;
            Ok(count(row.get(0)))
        })
    }

    fn agents_with_queue(&self) -> StoreFuture<Vec<Uuid>> {
        let pool = self.pool.clone();
        self.spawn(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query("SELECT DISTINCT agent FROM run_queue ORDER BY agent", &[])
                .await
                .map_err(pg_error)?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    fn running(&self) -> StoreFuture<Vec<StoredRun>> {
        let store = self.clone();
        self.spawn(async move {
            let client = store.pool.get().await.map_err(pool_error)?;
            // Left behind: this node's (by an earlier process with the same id), those of no
            // node, and those of nodes no longer alive; not those other live nodes are running.
            let rows = client
                .query(
                    "SELECT body FROM runs WHERE status = 'running'
                       AND (node IS NULL OR node = $1 OR node NOT IN (
                           SELECT id FROM nodes
                           WHERE last_seen > now() - make_interval(secs => $2)))",
                    &[&store.node(), &(super::NODE_TIMEOUT_SECS as f64)],
                )
                .await
                .map_err(pg_error)?;
            rows.iter().map(run_of).collect()
        })
    }

    /// Leases the entries it returns to this node for [`PUSH_LEASE_SECS`]: another node's
    /// pusher skips them meanwhile, so each attempt is made by one node; a node that dies
    /// mid-delivery leaves them to the others once the lease ends.
    fn due_pushes(&self, now: DateTime<Utc>, limit: usize) -> StoreFuture<Vec<DuePush>> {
        let store = self.clone();
        self.spawn(async move {
            let client = store.pool.get().await.map_err(pool_error)?;
            let rows = client
                .query(
                    "UPDATE push_outbox SET leased_by = $3,
                         leased_until = now() + make_interval(secs => $4)
                     WHERE (due_ms, rid) IN (
                         SELECT due_ms, rid FROM push_outbox
                         WHERE due_ms <= $1 AND (leased_by IS NULL OR leased_by = $3
                                                 OR leased_until < now())
                         ORDER BY due_ms, rid LIMIT $2 FOR UPDATE SKIP LOCKED)
                     RETURNING due_ms, rid",
                    &[
                        &millis(now),
                        &bigint(limit),
                        &store.node(),
                        &PUSH_LEASE_SECS,
                    ],
                )
                .await
                .map_err(pg_error)?;
            let mut due = rows
                .iter()
                .map(|row| {
                    Ok(DuePush {
                        due: from_millis(row.get(0))?,
                        rid: row.get(1),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            due.sort_by_key(|e| (e.due, e.rid));
            Ok(due)
        })
    }

    /// For this node: an entry another node holds a lease on is due when the lease ends.
    fn next_push_due(&self) -> StoreFuture<Option<DateTime<Utc>>> {
        let store = self.clone();
        self.spawn(async move {
            let client = store.pool.get().await.map_err(pool_error)?;
            let row = client
                .query_one(
                    "SELECT MIN(CASE WHEN leased_by <> $1 AND leased_until > now()
                         THEN GREATEST(due_ms, (extract(epoch FROM leased_until) * 1000)::bigint)
                         ELSE due_ms END)
                     FROM push_outbox",
                    &[&store.node()],
                )
                .await
                .map_err(pg_error)?;
            row.get::<_, Option<i64>>(0).map(from_millis).transpose()
        })
    }

    fn reschedule_push(
        &self,
        entry: DuePush,
        run: StoredRun,
        next: Option<DateTime<Utc>>,
    ) -> StoreFuture<()> {
        self.spawn(reschedule_push(self.clone(), entry, run, next))
    }

    fn purge(&self, cutoff: DateTime<Utc>) -> StoreFuture<usize> {
        self.spawn(purge(self.clone(), cutoff))
    }
}

#[derive(Serialize, Deserialize)]
struct StoredRunEvent {
    #[serde(rename = "type")]
    kind: String,
    data: Value,
    at: DateTime<Utc>,
}

/// Keeps appends to one run in the order their futures were created: each waits for the one
/// created before it on the same run (on this node; a run's events are written by the node
/// running it).
#[derive(Default)]
pub(super) struct RunEventOrder {
    last: Mutex<HashMap<Uuid, (u64, oneshot::Receiver<()>)>>,
    next_ticket: std::sync::atomic::AtomicU64,
}

impl RunEventOrder {
    /// This append's ticket, the previous append's signal to wait for, and the sender to fire
    /// when done.
    fn enter(&self, rid: Uuid) -> (u64, Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        let ticket = self
            .next_ticket
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let before = last.insert(rid, (ticket, rx)).map(|(_, rx)| rx);
        (ticket, before, tx)
    }

    /// Forgets the run if this append was the last one made on it.
    fn leave(&self, rid: Uuid, ticket: u64) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.get(&rid).is_some_and(|(t, _)| *t == ticket) {
            last.remove(&rid);
        }
    }
}

/// Inserts a row numbered one past the last of its group, retrying when another writer took the
/// number first. `insert` is a statement that computes the number and returns it.
async fn insert_numbered(
    client: &impl GenericClient,
    insert: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<i64> {
    let mut attempt = 0;
    loop {
        match client.query_one(insert, params).await {
            Ok(row) => return Ok(row.get(0)),
            Err(e) if is_unique_violation(&e) && attempt + 1 < NUMBERING_ATTEMPTS => attempt += 1,
            Err(e) => return Err(pg_error(e)),
        }
    }
}

impl RunEventStore for PgStore {
    fn append_run_event(
        &self,
        rid: Uuid,
        thread: Option<ThreadOf>,
        kind: String,
        data: Value,
    ) -> StoreFuture<RunEvent> {
        let at = Utc::now();
        let (ticket, before, done) = self.run_events.enter(rid);
        let store = self.clone();
        self.spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            let stored = StoredRunEvent { kind, data, at };
            let (agent, scope) = match thread {
                Some(t) => (Some(t.agent), Some(t.scope)),
                None => (None, None),
            };
            let result = async {
                let body = encode(&stored)?;
                let client = store.pool.get().await.map_err(pool_error)?;
                insert_numbered(
                    &client,
                    "INSERT INTO run_events (rid, seq, body, agent, thread)
                     SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4 FROM run_events
                     WHERE rid = $1
                     RETURNING seq",
                    &[&rid, &body, &agent, &scope],
                )
                .await
            }
            .await;
            let _ = done.send(());
            store.run_events.leave(rid, ticket);
            Ok(RunEvent {
                seq: u64::try_from(result?).unwrap_or(0),
                kind: stored.kind,
                data: stored.data,
                at,
            })
        })
    }

    fn run_events(&self, rid: Uuid, after: u64, limit: usize) -> StoreFuture<Vec<RunEvent>> {
        let pool = self.pool.clone();
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.spawn(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query(
                    "SELECT seq, body FROM run_events WHERE rid = $1 AND seq > $2
                     ORDER BY seq LIMIT $3",
                    &[&rid, &after, &bigint(limit)],
                )
                .await
                .map_err(pg_error)?;
            rows.iter()
                .map(|row| {
                    let e: StoredRunEvent = decode(row.get::<_, &[u8]>(1))?;
                    Ok(RunEvent {
                        seq: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                        kind: e.kind,
                        data: e.data,
                        at: e.at,
                    })
                })
                .collect()
        })
    }
}

impl ThreadStore for PgStore {
    fn append_turn(&self, agent: Uuid, thread: String, turn: Turn) -> StoreFuture<()> {
        let pool = self.pool.clone();
        self.spawn(async move {
            let body = encode(&turn)?;
            let client = pool.get().await.map_err(pool_error)?;
            insert_numbered(
                &client,
                "INSERT INTO thread_turns (agent, thread, seq, body)
                 SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3 FROM thread_turns
                 WHERE agent = $1 AND thread = $2
                 RETURNING seq",
                &[&agent, &thread, &body],
            )
            .await
            .map(drop)
        })
    }

    fn turns(&self, agent: Uuid, thread: String, last: usize) -> StoreFuture<Vec<Turn>> {
        let pool = self.pool.clone();
        self.spawn(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query(
                    "SELECT body FROM thread_turns WHERE agent = $1 AND thread = $2
                     ORDER BY seq DESC LIMIT $3",
                    &[&agent, &thread, &bigint(last)],
                )
                .await
                .map_err(pg_error)?;
            rows.iter()
                .rev()
                .map(|row| decode(row.get::<_, &[u8]>(0)))
                .collect()
        })
    }

    fn delete_thread(&self, agent: Uuid, thread: String) -> StoreFuture<bool> {
        let pool = self.pool.clone();
        self.spawn(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            let turns = tx
                .execute(
                    "DELETE FROM thread_turns WHERE agent = $1 AND thread = $2",
                    &[&agent, &thread],
                )
                .await
                .map_err(pg_error)?;
            // Numbered events keep their place and kind (a stream resumed after one still
            // counts right), not their data: as sled reads them once the thread's key is gone.
            tx.execute(
                "UPDATE run_events SET body = convert_to(jsonb_set(
                     convert_from(body, 'UTF8')::jsonb, '{data}', '{\"deleted\": true}'
                 )::text, 'UTF8')
                 WHERE agent = $1 AND thread = $2",
                &[&agent, &thread],
            )
            .await
            .map_err(pg_error)?;
            // The thread's runs keep their record (status, times) but lose what was said in
            // them, as on sled, where the thread's key that sealed it is destroyed.
            let rows = tx
                .query(
                    "SELECT body FROM runs WHERE agent = $1 AND thread = $2 FOR UPDATE",
                    &[&agent, &thread],
                )
                .await
                .map_err(pg_error)?;
            for row in &rows {
                let mut run = run_of(row)?;
                run.input = serde_json::json!({"deleted": true});
                run.run.output = None;
                run.run.pending = None;
                run.checkpoint = None;
                tx.execute(
                    "UPDATE runs SET body = $2 WHERE rid = $1",
                    &[&run.run.request_id, &encode(&run)?],
                )
                .await
                .map_err(pg_error)?;
            }
            tx.commit().await.map_err(pg_error)?;
            Ok(turns > 0 || !rows.is_empty())
        })
    }
}
