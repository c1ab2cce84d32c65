use std::sync::Arc;

use super::testing::TempPostgres;
use super::*;
use crate::store::conformance;

fn server() -> Option<TempPostgres> {
    let pg = TempPostgres::start();
    if pg.is_none() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: no PostgreSQL binaries (initdb, pg_ctl) found; install \
             Debian's `postgresql` (./x test does) or set HANGAR_PG_BIN !!!!!!!!\n"
        );
    }
    pg
}

#[test]
fn passes_the_event_store_conformance_suite() {
    let Some(pg) = server() else { return };
    let store = PgStore::connect(&pg.url(), "test").expect("connects");
    conformance::run_all(&store);
}

#[test]
fn passes_the_run_store_conformance_suites() {
    let Some(pg) = server() else { return };
    let store = PgStore::connect(&pg.url(), "test").expect("connects");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the suite");
    rt.block_on(conformance::runs::run_all(Arc::new(store)));
}

#[test]
fn migrations_apply_once_and_a_newer_schema_is_refused() {
    let Some(pg) = server() else { return };
    let url = pg.url();
    let first = PgStore::connect(&url, "a").expect("connects and migrates");
    let again = PgStore::connect(&url, "b").expect("a second start migrates nothing");
    let versions: i64 = again
        .block({
            let pool = again.pool.clone();
            async move {
                let c = pool.get().await.map_err(pool_error)?;
                let row = c
                    .query_one("SELECT COUNT(*) FROM hangar_schema", &[])
                    .await
                    .map_err(pg_error)?;
                let bump = SCHEMA_VERSION + 1;
                c.execute("INSERT INTO hangar_schema (version) VALUES ($1)", &[&bump])
                    .await
                    .map_err(pg_error)?;
                Ok(row.get(0))
            }
        })
        .expect("reads the versions");
    assert_eq!(versions, i64::from(SCHEMA_VERSION));
    drop(first);
    match PgStore::connect(&url, "c") {
        Err(Error::Io(reason)) => assert!(reason.contains("newer than this build"), "{reason}"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

#[test]
fn an_unreachable_database_is_unavailable_within_the_deadline() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let started = std::time::Instant::now();
    match PgStore::connect(&format!("postgres://hangar@127.0.0.1:{port}/x"), "n") {
        Err(Error::Unavailable(_)) => {}
        Err(other) => panic!("expected unavailable, got {other}"),
        Ok(_) => panic!("nothing listens there"),
    }
    assert!(started.elapsed() < DEADLINE + std::time::Duration::from_secs(2));
}

/// A future made on a thread without a tokio runtime (the retention thread makes `purge`'s
/// before its `block_on`) must not panic: the deadline's timer belongs to the store's runtime.
#[test]
fn a_future_made_outside_any_runtime_runs() {
    let Some(pg) = server() else { return };
    let store = PgStore::connect(&pg.url(), "test").expect("connects");
    let purged = std::thread::spawn(move || {
        let ping = store.ping();
        let purge = crate::store::runs::RunStore::purge(&store, chrono::Utc::now());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        rt.block_on(ping).expect("ping");
        rt.block_on(purge)
    })
    .join()
    .expect("no panic outside a runtime");
    assert_eq!(purged.expect("purges"), 0);
}
