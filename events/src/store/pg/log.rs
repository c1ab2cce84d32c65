//! The event log in PostgreSQL: `events (stream, seq, body)` with the primary key
//! `(stream, seq)`, and `heads (stream, seq, hash)`, one row per stream that has events.
//!
//! An append reads the head, seals the batch against it (hash chain) and inserts the events and
//! the new head in one transaction. The primary key is the fence: of two writers that read the
//! same head, the second's insert of the same seq waits for the first to commit and then fails
//! with a unique violation, which is [`Error::Conflict`] with the seq the winner left. Readers
//! see a transaction whole or not at all, so never part of a batch.

use uuid::Uuid;

use super::{is_unique_violation, pg_error, pool_error, PgStore, Result};
use crate::envelope::{Envelope, NewEvent, GENESIS_HASH};
use crate::store::{Commit, Error, EventStore};

type Client = deadpool_postgres::Object;

/// The stream's last seq and hash: (0, genesis) for a stream without events.
async fn read_head(client: &Client, stream: Uuid) -> Result<(u64, String)> {
    let row = client
        .query_opt("SELECT seq, hash FROM heads WHERE stream = $1", &[&stream])
        .await
        .map_err(pg_error)?;
    Ok(match row {
        Some(row) => (seq_of(stream, row.get(0))?, row.get(1)),
        None => (0, GENESIS_HASH.to_owned()),
    })
}

fn seq_of(stream: Uuid, seq: i64) -> Result<u64> {
    u64::try_from(seq).map_err(|_| Error::Corrupt {
        stream,
        seq: 0,
        reason: format!("a stored seq is negative ({seq})"),
    })
}

/// A seq as PostgreSQL's bigint; seqs past `i64::MAX` cannot exist, so they read as the end.
fn as_bigint(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

async fn append(
    store: PgStore,
    stream: Uuid,
    expected: u64,
    events: Vec<NewEvent>,
) -> Result<Vec<Envelope>> {
    let mut client = store.pool.get().await.map_err(pool_error)?;
    let conflict = |actual| Error::Conflict {
        stream,
        expected,
        actual,
    };
    let (head, hash) = read_head(&client, stream).await?;
    if head != expected {
        return Err(conflict(head));
    }
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut sealed: Vec<Envelope> = Vec::with_capacity(events.len());
    let mut seqs: Vec<i64> = Vec::with_capacity(events.len());
    let mut bodies: Vec<Vec<u8>> = Vec::with_capacity(events.len());
    for (seq, new) in (head + 1..).zip(&events) {
        let prev = sealed.last().map_or(hash.as_str(), |env| env.hash.as_str());
        let (env, bytes) = Envelope::seal(stream, seq, prev, new)
            .map_err(|e| Error::Io(format!("encoding event {stream}#{seq}: {e}")))?;
        seqs.push(as_bigint(seq));
        bodies.push(bytes);
        sealed.push(env);
    }
    let (last_seq, last_hash) = match sealed.last() {
        Some(env) => (as_bigint(env.seq), env.hash.clone()),
        None => return Ok(Vec::new()),
    };
    let tx = client.transaction().await.map_err(pg_error)?;
    let inserted = tx
        .execute(
            "INSERT INTO events (stream, seq, body)
             SELECT $1, s, b FROM unnest($2::bigint[], $3::bytea[]) AS t(s, b)",
            &[&stream, &seqs, &bodies],
        )
        .await;
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            drop(tx);
            // The winner has committed (the insert waited for it): its head is the one to report.
            let (actual, _) = read_head(&client, stream).await?;
            return Err(conflict(actual));
        }
        Err(e) => return Err(pg_error(e)),
    }
    tx.execute(
        "INSERT INTO heads (stream, seq, hash, changed_at) VALUES ($1, $2, $3, now())
         ON CONFLICT (stream) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash,
             changed_at = now()",
        &[&stream, &last_seq, &last_hash],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(sealed)
}

impl EventStore for PgStore {
    /// Committed (with `synchronous_commit = on`, durable) when it returns: the commit is
    /// already durable.
    fn append(&self, stream: Uuid, expected: u64, events: &[NewEvent]) -> Result<Commit> {
        let events = events.to_vec();
        let store = self.clone();
        let envelopes = self.block(append(store, stream, expected, events))?;
        Ok(Commit::durable_now(envelopes))
    }

    fn read_raw(&self, stream: Uuid, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let pool = self.pool.clone();
        let from = as_bigint(from.max(1));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.block(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query(
                    "SELECT seq, body FROM events WHERE stream = $1 AND seq >= $2
                     ORDER BY seq LIMIT $3",
                    &[&stream, &from, &limit],
                )
                .await
                .map_err(pg_error)?;
            rows.into_iter()
                .map(|row| Ok((seq_of(stream, row.get(0))?, row.get(1))))
                .collect()
        })
    }

    fn head(&self, stream: Uuid) -> Result<u64> {
        let pool = self.pool.clone();
        self.block(async move {
            let client = pool.get().await.map_err(pool_error)?;
            Ok(read_head(&client, stream).await?.0)
        })
    }

    fn streams(&self) -> Result<Vec<Uuid>> {
        let pool = self.pool.clone();
        self.block(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query("SELECT stream FROM heads ORDER BY stream", &[])
                .await
                .map_err(pg_error)?;
            Ok(rows.into_iter().map(|row| row.get(0)).collect())
        })
    }

    fn save_snapshot(&self, stream: Uuid, seq: u64, state: &[u8]) -> Result<()> {
        let pool = self.pool.clone();
        let (seq, state) = (as_bigint(seq), state.to_vec());
        self.block(async move {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "INSERT INTO snapshots (stream, seq, state) VALUES ($1, $2, $3)
                     ON CONFLICT (stream) DO UPDATE SET seq = EXCLUDED.seq, state = EXCLUDED.state
                     WHERE snapshots.seq < EXCLUDED.seq",
                    &[&stream, &seq, &state],
                )
                .await
                .map_err(pg_error)?;
            Ok(())
        })
    }

    fn load_snapshot(&self, stream: Uuid) -> Result<Option<(u64, Vec<u8>)>> {
        let pool = self.pool.clone();
        self.block(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_opt(
                    "SELECT seq, state FROM snapshots WHERE stream = $1",
                    &[&stream],
                )
                .await
                .map_err(pg_error)?;
            row.map(|row| Ok((seq_of(stream, row.get(0))?, row.get(1))))
                .transpose()
        })
    }
}

/// Streams that changed, with their seq now, and the database's time of the query.
pub type Changes = (Vec<(Uuid, u64)>, chrono::DateTime<chrono::Utc>);

impl PgStore {
    /// Streams whose head moved at or after `since` (the database's clock, give or take the
    /// length of a transaction: callers overlap their windows), with their seq now, and the
    /// database's time now for the next call. The cheap "agents changed" query every node
    /// polls, so that it learns of other nodes' writes (an undeploy) within its poll period.
    pub fn changed_streams(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> crate::store::StoreFuture<Changes> {
        let pool = self.pool.clone();
        self.spawn(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let now: chrono::DateTime<chrono::Utc> = client
                .query_one("SELECT now()", &[])
                .await
                .map_err(pg_error)?
                .get(0);
            let rows = client
                .query(
                    "SELECT stream, seq FROM heads WHERE changed_at >= $1",
                    &[&since],
                )
                .await
                .map_err(pg_error)?;
            let changed = rows
                .iter()
                .map(|row| Ok((row.get(0), seq_of(row.get(0), row.get(1))?)))
                .collect::<Result<Vec<_>>>()?;
            Ok((changed, now))
        })
    }
}
