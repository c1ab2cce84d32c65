//! Actor tests over a real sled store: activation, rebuild from the log, crash containment.

use std::sync::Arc;

use actix::prelude::*;
use events::command::Command;
use events::secret::Cipher;
use events::spec::AgentSpec;
use events::store::{EventStore, SledStore};
use events::AgentState;

use crate::agent::{AgentActor, Crash, Execute, GetState};
use crate::{Error, Registry};

fn spec(name: &str) -> AgentSpec {
    AgentSpec {
        name: name.into(),
        description: "d".into(),
        ..Default::default()
    }
}

fn setup() -> (tempfile::TempDir, Arc<dyn EventStore>, Arc<Cipher>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn EventStore> =
        Arc::new(SledStore::open(&dir.path().join("store")).expect("opens"));
    (dir, store, Arc::new(Cipher::from_key(&[9; 32])))
}

#[actix_rt::test]
async fn commands_become_events_and_the_state_is_their_fold() {
    let (_dir, store, cipher) = setup();
    let reg = Registry::new(store.clone(), cipher, 2);
    let out = reg.create(spec("a")).await.expect("created");
    let id = out.state.id;
    for i in 0..5 {
        reg.execute(
            id,
            Command::EditDraft {
                spec: spec(&format!("a{i}")),
            },
            None,
        )
        .await
        .expect("edited");
    }
    let live = reg.state(id).await.expect("state");
    assert_eq!(live.seq, 6);
    let replayed = AgentState::replay(id, &store.read_all(id).expect("log"));
    assert_eq!(
        *live, replayed,
        "the live actor's state is exactly the fold of its log"
    );
}

#[actix_rt::test]
async fn if_match_guards_and_unknown_agents_are_not_activated() {
    let (_dir, store, cipher) = setup();
    let reg = Registry::new(store.clone(), cipher, 1);
    let id = reg.create(spec("a")).await.expect("created").state.id;
    let stale = reg
        .execute(id, Command::EditDraft { spec: spec("b") }, Some(0))
        .await;
    assert!(matches!(
        stale,
        Err(Error::Rejected(events::Rejection::Stale {
            expected: 0,
            actual: 1
        }))
    ));
    assert_eq!(store.head(id).expect("head"), 1, "nothing written");
    let unknown = reg.state(uuid::Uuid::now_v7()).await;
    assert!(matches!(
        unknown,
        Err(Error::Rejected(events::Rejection::NotFound { .. }))
    ));
    assert_eq!(store.streams().expect("streams").len(), 1);
}

/// Guards against a panic in one agent's handler taking down its state or the server: the
/// supervisor restarts the actor, which rebuilds from its log and keeps serving.
#[actix_rt::test]
async fn a_panicking_actor_is_restarted_and_rebuilt_from_its_log() {
    let (_dir, store, cipher) = setup();
    let reg = Registry::new(store.clone(), cipher.clone(), 1);
    let id = reg
        .create(spec("survivor"))
        .await
        .expect("created")
        .state
        .id;
    reg.execute(
        id,
        Command::EditDraft {
            spec: spec("survivor-2"),
        },
        None,
    )
    .await
    .expect("edited");

    let (s2, c2) = (store.clone(), cipher.clone());
    let addr = Supervisor::start(move |_| AgentActor::new(id, s2, c2));
    let before = addr.send(GetState).await.expect("mailbox").expect("state");
    assert!(matches!(
        addr.send(Crash).await,
        Ok(Err(Error::Unavailable(_)))
    ));
    let after = addr
        .send(GetState)
        .await
        .expect("the same address still answers")
        .expect("state");
    assert_eq!(after.seq, 2, "the corrupted in-memory seq was discarded");
    assert_eq!(after, before);
    // The registry's own actor for another agent was never affected.
    assert_eq!(reg.state(id).await.expect("state").draft.name, "survivor-2");
}

/// Guards against a snapshot changing what activation yields: an actor started from a snapshot
/// plus the events after it has exactly the state of a full replay.
#[actix_rt::test]
async fn activation_from_a_snapshot_equals_a_full_replay() {
    let (_dir, store, cipher) = setup();
    let reg = Registry::new(store.clone(), cipher.clone(), 1);
    let id = reg.create(spec("long")).await.expect("created").state.id;
    for i in 0..2_500 {
        reg.execute(
            id,
            Command::EditDraft {
                spec: spec(&format!("long-{i}")),
            },
            None,
        )
        .await
        .expect("edited");
    }
    let (seq, _) = store
        .load_snapshot(id)
        .expect("reads")
        .expect("a snapshot was taken");
    assert!((2_000..2_501).contains(&seq), "snapshot at {seq}");
    let (s2, c2) = (store.clone(), cipher.clone());
    let fresh = AgentActor::new(id, s2, c2).start();
    let activated = fresh.send(GetState).await.expect("mailbox").expect("state");
    let replayed = AgentState::replay(id, &store.read_all(id).expect("log"));
    assert_eq!(*activated, replayed);
    assert_eq!(activated.seq, 2_501);
}

/// Guards the bound on activation: after a restart, the next snapshot is due 1,000 events after
/// the stored one the actor started from, not 1,000 after the head it reached by folding.
#[actix_rt::test]
async fn the_next_snapshot_is_due_a_thousand_events_after_the_stored_one() {
    let (_dir, store, cipher) = setup();
    let reg = Registry::new(store.clone(), cipher.clone(), 1);
    let id = reg.create(spec("restart")).await.expect("created").state.id;
    let edit = |i: usize| Command::EditDraft {
        spec: spec(&format!("restart-{i}")),
    };
    for i in 0..1_500 {
        reg.execute(id, edit(i), None).await.expect("edited");
    }
    let (first, _) = store.load_snapshot(id).expect("reads").expect("a snapshot");
    assert_eq!(first, 1_000);
    // A new actor (as after a restart; the registry's stays idle) activates from seq 1,000 with
    // 501 events folded on top, then takes 600 more: the log reaches seq 2,101.
    let fresh = AgentActor::new(id, store.clone(), cipher).start();
    for i in 0..600 {
        let msg = Execute {
            command: edit(i),
            if_match: None,
        };
        fresh.send(msg).await.expect("mailbox").expect("edited");
    }
    let (next, _) = store.load_snapshot(id).expect("reads").expect("a snapshot");
    assert_eq!(
        next, 2_000,
        "due at 1,000 + 1,000, not at the activation head 1,501 + 1,000"
    );
}

#[actix_rt::test]
async fn an_unreadable_snapshot_falls_back_to_the_log() {
    let (_dir, store, cipher) = setup();
    let reg = Registry::new(store.clone(), cipher.clone(), 1);
    let id = reg
        .create(spec("fallback"))
        .await
        .expect("created")
        .state
        .id;
    store.save_snapshot(id, 1, b"{not json").expect("saved");
    let fresh = AgentActor::new(id, store.clone(), cipher).start();
    let state = fresh.send(GetState).await.expect("mailbox").expect("state");
    assert_eq!(state.draft.name, "fallback");
    assert_eq!(state.seq, 1);
}

/// The purge removes final runs that finished before the cutoff (in batches), and keeps runs in
/// flight, runs whose push is pending, and recent runs, which its scan by creation time must not
/// stop short of.
#[test]
fn the_purge_removes_old_final_runs_only() {
    use crate::runtime::{Mode, PushState, Run, RunStatus, RunStore, StoredRun};
    use chrono::{Duration, Utc};
    use uuid::{NoContext, Timestamp, Uuid};

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SledStore::open(&dir.path().join("store")).expect("opens"));
    let runs = RunStore::open(store).expect("run store");
    let run = |age: Duration, status: RunStatus| {
        let at = Utc::now() - age;
        let ts = Timestamp::from_unix(
            NoContext,
            at.timestamp() as u64,
            at.timestamp_subsec_nanos(),
        );
        StoredRun {
            run: Run {
                request_id: Uuid::new_v7(ts),
                agent_id: Uuid::now_v7(),
                version: 1,
                status,
                output: None,
                error: None,
                created_at: at,
                started_at: Some(at),
                finished_at: status.is_final().then_some(at),
                push: None,
            },
            mode: Mode::Async,
            input: serde_json::json!({}),
            member: None,
            idempotency_key: None,
            push_enabled: false,
        }
    };
    let two_hours = Duration::hours(2);
    let old: Vec<StoredRun> = (0..300)
        .map(|_| run(two_hours, RunStatus::Succeeded))
        .collect();
    let in_flight = run(two_hours, RunStatus::Running);
    let mut pushing = run(two_hours, RunStatus::Succeeded);
    pushing.run.push = Some(PushState::pending(Utc::now()));
    let recent = run(Duration::seconds(1), RunStatus::Succeeded);
    for r in old.iter().chain([&in_flight, &pushing, &recent]) {
        runs.put(r).expect("put");
    }
    let purged = runs.purge(Utc::now() - Duration::hours(1)).expect("purge");
    assert_eq!(purged, 300);
    for r in &old {
        assert!(runs.get(r.run.request_id).expect("get").is_none());
    }
    for r in [&in_flight, &pushing, &recent] {
        assert!(runs.get(r.run.request_id).expect("get").is_some());
    }
    // The recent run goes once the cutoff passes it.
    assert_eq!(
        runs.purge(Utc::now() + Duration::seconds(1))
            .expect("purge"),
        1
    );
}
