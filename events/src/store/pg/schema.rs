//! The schema and its versioned migrations, applied at every start.
//!
//! `hangar_schema` holds one row per migration applied. A node applies the ones it knows that
//! are missing, in order, in one transaction under an advisory lock (so nodes starting together
//! apply each once); a database whose schema is newer than this build is refused, since an older
//! binary could misread rows a newer one wrote.

use deadpool_postgres::Pool;

use super::{pg_error, pool_error, Result};
use crate::store::Error;

/// Migrations, version 1 first; a migration is never edited once released, only appended.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Any 64-bit constant, the same in every build: the advisory lock migrations take.
const MIGRATION_LOCK: i64 = 0x4841_4e47_4152_0001;

const V1: &str = r#"
CREATE TABLE events (
    stream uuid NOT NULL,
    seq bigint NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (stream, seq)
);
CREATE TABLE heads (
    stream uuid PRIMARY KEY,
    seq bigint NOT NULL,
    hash text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX heads_changed ON heads (changed_at);
CREATE TABLE snapshots (
    stream uuid PRIMARY KEY,
    seq bigint NOT NULL,
    state bytea NOT NULL
);
CREATE TABLE runs (
    rid uuid PRIMARY KEY,
    agent uuid NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL,
    finished_at timestamptz,
    push_pending boolean NOT NULL,
    keyed boolean NOT NULL,
    node text,
    body bytea NOT NULL
);
CREATE INDEX runs_running ON runs (node) WHERE status = 'running';
CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE run_queue (
    agent uuid NOT NULL,
    rid uuid NOT NULL,
    PRIMARY KEY (agent, rid)
);
CREATE TABLE idempotency (
    agent uuid NOT NULL,
    caller text NOT NULL,
    key text NOT NULL,
    rid uuid NOT NULL,
    accepted_ms bigint NOT NULL,
    PRIMARY KEY (agent, caller, key)
);
CREATE INDEX idempotency_accepted ON idempotency (accepted_ms);
CREATE TABLE push_outbox (
    due_ms bigint NOT NULL,
    rid uuid NOT NULL,
    leased_by text,
    leased_until timestamptz,
    PRIMARY KEY (due_ms, rid)
);
CREATE TABLE run_events (
    rid uuid NOT NULL,
    seq bigint NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (rid, seq)
);
CREATE TABLE thread_turns (
    agent uuid NOT NULL,
    thread text NOT NULL,
    seq bigint NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (agent, thread, seq)
);
CREATE TABLE nodes (
    id text PRIMARY KEY,
    addr text NOT NULL,
    started_at timestamptz NOT NULL,
    last_seen timestamptz NOT NULL
);
"#;

/// An agent's runs newest first (`RunStore::list_runs`, A2A's `ListTasks`).
const V2: &str = r#"
CREATE INDEX runs_by_agent ON runs (agent, rid);
"#;

/// The thread each run and run event belongs to, so deleting a thread erases them too.
const V3: &str = r#"
ALTER TABLE runs ADD COLUMN thread text;
CREATE INDEX runs_by_thread ON runs (agent, thread) WHERE thread IS NOT NULL;
ALTER TABLE run_events ADD COLUMN agent uuid, ADD COLUMN thread text;
CREATE INDEX run_events_by_thread ON run_events (agent, thread) WHERE thread IS NOT NULL;
"#;

/// What holds `max_concurrency` and threads' turns for the whole cluster: one row per run
/// holding one of its agent's slots, and per thread a run holds, each owned by the node running
/// the run.
const V4: &str = r#"
CREATE TABLE run_slots (
    agent uuid NOT NULL,
    rid uuid NOT NULL,
    node text NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent, rid)
);
CREATE INDEX run_slots_by_rid ON run_slots (rid);
CREATE INDEX run_slots_by_node ON run_slots (node);
CREATE TABLE thread_holds (
    agent uuid NOT NULL,
    thread text NOT NULL,
    rid uuid NOT NULL,
    node text NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent, thread)
);
CREATE INDEX thread_holds_by_node ON thread_holds (node);
CREATE TABLE thread_waits (
    agent uuid NOT NULL,
    thread text NOT NULL,
    rid uuid NOT NULL,
    node text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent, thread, rid)
);
"#;

/// Brings the database to [`SCHEMA_VERSION`], or refuses it if it is newer.
pub(super) async fn migrate(pool: Pool) -> Result<()> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS hangar_schema (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(pg_error)?;
    let row = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM hangar_schema", &[])
        .await
        .map_err(pg_error)?;
    let current: i32 = row.get(0);
    if current > SCHEMA_VERSION {
        return Err(Error::Io(format!(
            "the database's Hangar schema is version {current}, newer than this build knows \
             ({SCHEMA_VERSION}): run a Hangar at least as new as the one that migrated it"
        )));
    }
    for (version, sql) in (1..).zip(MIGRATIONS).skip(current as usize) {
        tx.batch_execute(sql).await.map_err(pg_error)?;
        tx.execute(
            "INSERT INTO hangar_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(pg_error)?;
        tracing::info!(version, "applied a schema migration");
    }
    tx.commit().await.map_err(pg_error)
}

/// Checks, without changing anything, that the database holds a Hangar schema this build reads
/// (for the offline tools, which must not migrate a live cluster's database).
pub(super) async fn check(pool: Pool) -> Result<()> {
    let client = pool.get().await.map_err(pool_error)?;
    let row = client
        .query_one("SELECT to_regclass('hangar_schema') IS NOT NULL", &[])
        .await
        .map_err(pg_error)?;
    if !row.get::<_, bool>(0) {
        return Err(Error::Io(
            "the database holds no Hangar store (no hangar_schema table)".into(),
        ));
    }
    let row = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM hangar_schema", &[])
        .await
        .map_err(pg_error)?;
    let current: i32 = row.get(0);
    if current != SCHEMA_VERSION {
        return Err(Error::Io(format!(
            "the database's Hangar schema is version {current}; this build reads version \
             {SCHEMA_VERSION}: use the Hangar that serves it"
        )));
    }
    Ok(())
}
