//! Operators' tools over a stopped server's data directory, or a live PostgreSQL store
//! (`--store URL`). They open the store the server uses; sled locks the directory, so against a
//! running server they say so and stop. A PostgreSQL store is read as it is, while the cluster
//! serves; it is never migrated by these tools.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::http::view::AgentView;
use events::store::{self, EventStore, PgStore, SledStore};
use events::AgentState;
use uuid::Uuid;

use crate::cluster::StoreUrl;
use crate::serve::store_path;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The store named by `--store` (a postgres URL), else the sled store in `data`.
fn open(data: &Path, store: Option<&str>) -> Result<Box<dyn EventStore>> {
    match StoreUrl::parse(store)? {
        StoreUrl::Postgres(url) => Ok(Box::new(PgStore::connect_existing(&url)?)),
        StoreUrl::Sled => Ok(Box::new(open_sled(data)?)),
    }
}

/// Where the tools read, for messages: the data directory, or "the postgres store" (never the
/// URL, which may hold a password).
fn place(data: &Path, url: Option<&str>) -> String {
    match StoreUrl::parse(url) {
        Ok(StoreUrl::Postgres(_)) => "the postgres store".into(),
        _ => data.display().to_string(),
    }
}

fn open_sled(data: &Path) -> Result<SledStore> {
    if !store_path(data).exists() {
        return Err(format!(
            "{} holds no Hangar store (expected {})",
            data.display(),
            store_path(data).display()
        )
        .into());
    }
    Ok(SledStore::open(&store_path(data))?)
}

pub fn events(data: &Path, url: Option<&str>, agent: Uuid) -> Result<ExitCode> {
    let store = open(data, url)?;
    let log = store.read_raw(agent, 1, usize::MAX)?;
    if log.is_empty() {
        return Err(format!("no agent {agent} in {}", place(data, url)).into());
    }
    let mut out = std::io::stdout().lock();
    for (_, bytes) in log {
        out.write_all(&bytes)?;
        out.write_all(b"\n")?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn replay(data: &Path, url: Option<&str>, agent: Uuid, at: Option<u64>) -> Result<ExitCode> {
    let store = open(data, url)?;
    let head = store.head(agent)?;
    if head == 0 {
        return Err(format!("no agent {agent} in {}", place(data, url)).into());
    }
    let at = at.unwrap_or(head);
    if at == 0 || at > head {
        return Err(format!("--at must be between 1 and {head}").into());
    }
    // In chunks, not the whole log at once: memory stays flat however long the log, and each
    // chunk is folded while it is still in the cache.
    const CHUNK: u64 = 4096;
    let mut state = AgentState::new(agent);
    let mut next = 1;
    while next <= at {
        let chunk = store.read(agent, next, CHUNK.min(at - next + 1) as usize)?;
        let Some(last) = chunk.last().map(|env| env.seq) else {
            break;
        };
        for env in &chunk {
            state.apply(env);
        }
        next = last + 1;
    }
    let mut doc = serde_json::to_value(AgentView::of(&state))?;
    events::secret::redact_json(&mut doc);
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(ExitCode::SUCCESS)
}

pub fn verify(data: &Path, url: Option<&str>) -> Result<ExitCode> {
    let store = open(data, url)?;
    match store::verify_all(store.as_ref()) {
        Ok(report) => {
            println!(
                "ok: {} agents, {} events, every hash chain intact",
                report.streams, report.events
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(store::Error::Corrupt {
            stream,
            seq,
            reason,
        }) => {
            println!("FAILED: agent {stream}, event seq {seq}: {reason}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
