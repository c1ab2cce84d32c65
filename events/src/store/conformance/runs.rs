//! The suites every [`RunStore`], [`RunEventStore`] and [`ThreadStore`] must pass unchanged.
//!
//! Each case is an async function over a shared store; it uses agents and runs of its own, so
//! cases may run in any order. A store's test calls [`run_all`] inside the async runtime its
//! engine needs (sled: any; a networked engine: its own), and each case prints its name first,
//! so a failure names it.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{Duration, Utc};
use futures_util::future::join_all;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::run::{
    fingerprint, Mode, PushStatus, Run, RunError, RunStatus, StoredRun, ThreadOf, Turn,
};
use crate::store::runs::{Accepted, RunStores, IDEMPOTENCY_WINDOW};

mod a2a_push;
use a2a_push::*;

type Case = fn(Arc<dyn RunStores>) -> Pin<Box<dyn Future<Output = ()>>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case, by name.
        pub const CASES: &[(&str, Case)] = &[
            $((stringify!($name), |s| Box::pin($name(s)))),*
        ];
    };
}

cases!(
    accepted_run_reads_back_whole,
    a_threads_paused_run_reads_back_whole,
    enqueued_runs_are_claimed_oldest_first,
    racing_claims_never_share_a_run,
    a_repeated_key_with_the_same_body_finds_the_first_request,
    a_repeated_key_with_another_body_is_refused,
    keys_are_scoped_to_agent_and_caller,
    keys_expire_after_the_window,
    racing_accepts_with_one_key_record_one_request,
    finishing_dequeues_and_schedules_the_push_together,
    cancel_queued_takes_only_queued_runs,
    resume_takes_a_paused_run_once,
    outbox_is_due_in_order_and_reschedules_atomically,
    running_lists_runs_left_running,
    recorded_sync_runs_read_back,
    a_reader_never_sees_half_a_run,
    purge_keeps_what_must_stay,
    run_events_are_numbered_per_run,
    recorded_and_appended_events_share_one_numbering,
    runs_are_listed_per_agent_newest_first,
    threads_keep_turns_in_order_and_delete_them_all,
    deleting_a_thread_erases_what_its_runs_said,
    slots_never_exceed_the_limit_and_free_when_runs_end,
    claims_in_slots_take_no_more_than_the_free_slots,
    a_thread_is_held_by_one_run_at_a_time,
    a_config_set_on_a_queued_run_is_pushed_when_it_ends,
    a_config_set_while_running_survives_finish,
    a_config_set_on_a_final_run_is_due_now,
    deleting_a_config_cancels_its_push,
);

pub async fn run_all(store: Arc<dyn RunStores>) {
    for (name, case) in CASES {
        eprintln!("run store conformance: {name}");
        case(store.clone()).await;
    }
}

pub(crate) fn new_run(agent: Uuid, mode: Mode, input: Value) -> StoredRun {
    let now = Utc::now();
    StoredRun {
        run: Run {
            request_id: Uuid::now_v7(),
            agent_id: agent,
            version: 1,
            status: match mode {
                Mode::Sync => RunStatus::Running,
                Mode::Async => RunStatus::Queued,
            },
            output: None,
            error: None,
            created_at: now,
            started_at: None,
            finished_at: None,
            push: None,
            pending: None,
            parent: None,
            thread_id: None,
        },
        mode,
        fingerprint: Some(fingerprint(&input)),
        input,
        member: None,
        idempotency_key: None,
        caller: None,
        push_enabled: false,
        checkpoint: None,
        a2a_push: None,
    }
}

pub(crate) fn keyed(mut run: StoredRun, caller: &str, key: &str) -> StoredRun {
    run.caller = Some(caller.into());
    run.idempotency_key = Some(key.into());
    run
}

fn ids(runs: &[StoredRun]) -> Vec<Uuid> {
    runs.iter().map(|r| r.run.request_id).collect()
}

async fn accept_new(store: &dyn RunStores, run: &StoredRun, enqueue: bool) {
    let accepted = store.accept(run.clone(), enqueue).await.expect("accept");
    assert_eq!(accepted, Accepted::New, "a new request is recorded");
}

async fn get(store: &dyn RunStores, rid: Uuid) -> Option<StoredRun> {
    store.get(rid).await.expect("get")
}

/// What was accepted reads back field for field; an unknown id reads as none.
pub async fn accepted_run_reads_back_whole(store: Arc<dyn RunStores>) {
    let mut run = new_run(
        Uuid::now_v7(),
        Mode::Async,
        json!({"q": "ü", "n": [1, 2.5]}),
    );
    run.member = Some("alice".into());
    accept_new(&*store, &run, true).await;
    assert_eq!(get(&*store, run.run.request_id).await, Some(run));
    assert_eq!(get(&*store, Uuid::now_v7()).await, None);
}

/// A run of a thread, paused with what it waits for and where it resumes, reads back field for
/// field (an engine may store a thread's runs apart, e.g. sealed so that deleting the thread
/// destroys them).
pub async fn a_threads_paused_run_reads_back_whole(store: Arc<dyn RunStores>) {
    let mut run = new_run(Uuid::now_v7(), Mode::Async, json!({"message": "hi"}));
    run.run.thread_id = Some("chat:1".into());
    accept_new(&*store, &run, false).await;
    assert_eq!(get(&*store, run.run.request_id).await, Some(run.clone()));
    run.run.status = RunStatus::InputRequired;
    run.run.pending = Some(json!({"kind": "input", "node": "ask", "prompt": "Which?"}));
    run.checkpoint = Some(json!({"node": "ask", "nodes": {"a": {"text": "x"}}}));
    store.put(run.clone()).await.expect("put");
    assert_eq!(get(&*store, run.run.request_id).await, Some(run));
}

/// A queue is first in, first out; a claim marks runs running with a start time and takes them
/// off the queue; counts follow.
pub async fn enqueued_runs_are_claimed_oldest_first(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let runs: Vec<StoredRun> = (0..5)
        .map(|i| new_run(agent, Mode::Async, json!({ "i": i })))
        .collect();
    for run in &runs {
        accept_new(&*store, run, true).await;
    }
    assert_eq!(store.queued(agent).await.expect("queued"), 5);
    assert!(store.queue_len().await.expect("queue_len") >= 5);
    assert!(store
        .agents_with_queue()
        .await
        .expect("agents")
        .contains(&agent));
    let first = store.claim(agent, 2).await.expect("claim");
    assert_eq!(ids(&first), ids(&runs[..2]));
    for run in &first {
        assert_eq!(run.run.status, RunStatus::Running);
        assert!(run.run.started_at.is_some());
        let stored = get(&*store, run.run.request_id).await.expect("stored");
        assert_eq!(stored.run.status, RunStatus::Running, "the claim is stored");
    }
    assert_eq!(store.queued(agent).await.expect("queued"), 3);
    let rest = store.claim(agent, 10).await.expect("claim");
    assert_eq!(ids(&rest), ids(&runs[2..]));
    assert!(store.claim(agent, 10).await.expect("claim").is_empty());
    assert_eq!(store.queued(agent).await.expect("queued"), 0);
    assert!(!store
        .agents_with_queue()
        .await
        .expect("agents")
        .contains(&agent));
}

/// Two workers claiming one agent's queue at once: every run goes to exactly one of them.
pub async fn racing_claims_never_share_a_run(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let mut all = HashSet::new();
    for i in 0..20 {
        let run = new_run(agent, Mode::Async, json!({ "i": i }));
        all.insert(run.run.request_id);
        accept_new(&*store, &run, true).await;
    }
    let claims = join_all((0..4).map(|_| store.claim(agent, 7))).await;
    let mut seen = HashSet::new();
    for claim in claims {
        for run in claim.expect("claim") {
            assert!(seen.insert(run.run.request_id), "a run was claimed twice");
        }
    }
    assert_eq!(seen, all, "every run was claimed once");
}

/// Same caller, same key, same body: the first request, and nothing new stored.
pub async fn a_repeated_key_with_the_same_body_finds_the_first_request(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let first = keyed(
        new_run(agent, Mode::Async, json!({"a": 1, "b": 2})),
        "admin",
        "K",
    );
    accept_new(&*store, &first, true).await;
    let again = keyed(
        new_run(agent, Mode::Async, json!({"b": 2, "a": 1})),
        "admin",
        "K",
    );
    match store.accept(again.clone(), true).await.expect("accept") {
        Accepted::Existing(found) => assert_eq!(*found, first),
        other => panic!("expected the first request, got {other:?}"),
    }
    assert_eq!(get(&*store, again.run.request_id).await, None);
    assert_eq!(store.queued(agent).await.expect("queued"), 1);
    let found = store
        .find_by_key(agent, Some("admin".into()), "K".into(), Utc::now())
        .await
        .expect("find");
    assert_eq!(found, Some(first));
    for (caller, key) in [("admin", "k"), ("key-b", "K")] {
        let none = store
            .find_by_key(agent, Some(caller.into()), key.into(), Utc::now())
            .await
            .expect("find");
        assert_eq!(none, None, "{caller}'s {key} names nothing");
    }
}

/// Same caller, same key, another body: refused, nothing stored.
pub async fn a_repeated_key_with_another_body_is_refused(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let first = keyed(
        new_run(agent, Mode::Sync, json!({"order": 1})),
        "key-a",
        "K",
    );
    accept_new(&*store, &first, false).await;
    let other = keyed(
        new_run(agent, Mode::Sync, json!({"order": 2})),
        "key-a",
        "K",
    );
    match store.accept(other.clone(), false).await.expect("accept") {
        Accepted::KeyReused(found) => assert_eq!(found.run.request_id, first.run.request_id),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(get(&*store, other.run.request_id).await, None);
}

/// One key string used by two callers, or on two agents, names two requests.
pub async fn keys_are_scoped_to_agent_and_caller(store: Arc<dyn RunStores>) {
    let (agent, other_agent) = (Uuid::now_v7(), Uuid::now_v7());
    let body = json!({"order": 123});
    let a = keyed(
        new_run(agent, Mode::Async, body.clone()),
        "key-a",
        "order-123",
    );
    let b = keyed(
        new_run(agent, Mode::Async, body.clone()),
        "key-b",
        "order-123",
    );
    let admin = keyed(
        new_run(agent, Mode::Async, body.clone()),
        "admin",
        "order-123",
    );
    let elsewhere = keyed(
        new_run(other_agent, Mode::Async, body),
        "key-a",
        "order-123",
    );
    for run in [&a, &b, &admin, &elsewhere] {
        accept_new(&*store, run, true).await;
    }
    assert_eq!(store.queued(agent).await.expect("queued"), 3);
}

/// A key older than the window no longer names its request.
pub async fn keys_expire_after_the_window(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let mut old = keyed(new_run(agent, Mode::Async, json!({})), "admin", "K");
    old.run.created_at = Utc::now() - IDEMPOTENCY_WINDOW - Duration::minutes(1);
    accept_new(&*store, &old, true).await;
    let fresh = keyed(new_run(agent, Mode::Async, json!({})), "admin", "K");
    accept_new(&*store, &fresh, true).await;
    let again = keyed(new_run(agent, Mode::Async, json!({})), "admin", "K");
    match store.accept(again, true).await.expect("accept") {
        Accepted::Existing(found) => assert_eq!(found.run.request_id, fresh.run.request_id),
        other => panic!("the fresh key should name the fresh request, got {other:?}"),
    }
    let later = Utc::now() + IDEMPOTENCY_WINDOW + Duration::minutes(1);
    let found = store
        .find_by_key(agent, Some("admin".into()), "K".into(), later)
        .await
        .expect("find");
    assert_eq!(found, None, "past the window the key names nothing");
}

/// Eight accepts racing with one key: one request recorded, the others find it.
pub async fn racing_accepts_with_one_key_record_one_request(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let runs: Vec<StoredRun> = (0..8)
        .map(|_| {
            keyed(
                new_run(agent, Mode::Async, json!({"x": 1})),
                "admin",
                "race",
            )
        })
        .collect();
    let results = join_all(runs.iter().map(|r| store.accept(r.clone(), true))).await;
    let mut winners = Vec::new();
    let mut named = HashSet::new();
    for (run, result) in runs.iter().zip(results) {
        match result.expect("accept") {
            Accepted::New => winners.push(run.run.request_id),
            Accepted::Existing(found) => {
                named.insert(found.run.request_id);
            }
            Accepted::KeyReused(_) => panic!("same body, so never refused"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one request recorded");
    assert!(named.iter().all(|id| *id == winners[0]));
    assert_eq!(store.queued(agent).await.expect("queued"), 1);
}

/// Finishing a queued run stores its final state, takes it off the queue and schedules its push,
/// all at once.
pub async fn finishing_dequeues_and_schedules_the_push_together(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let mut run = new_run(agent, Mode::Async, json!({}));
    run.push_enabled = true;
    accept_new(&*store, &run, true).await;
    run.finish(RunStatus::Succeeded, Some(json!({"ok": true})), None);
    let due = run
        .schedule_push()
        .expect("an async pushing run schedules a push");
    store.finish(run.clone(), Some(due)).await.expect("finish");
    assert_eq!(get(&*store, run.run.request_id).await, Some(run.clone()));
    assert_eq!(store.queued(agent).await.expect("queued"), 0);
    let due_now = store
        .due_pushes(Utc::now() + Duration::seconds(1), 10_000)
        .await
        .expect("due");
    assert!(due_now.iter().any(|e| e.rid == run.run.request_id));
    assert!(store.claim(agent, 1).await.expect("claim").is_empty());
}

/// Only a run still on the queue can be cancelled as queued: it ends cancelled (push scheduled if
/// its version pushes); a claimed or unknown run is left alone.
pub async fn cancel_queued_takes_only_queued_runs(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    // Ids are time-ordered: `claimed` is older, so it is first on the queue.
    let claimed = new_run(agent, Mode::Async, json!({"n": 2}));
    let mut queued = new_run(agent, Mode::Async, json!({"n": 1}));
    queued.push_enabled = true;
    accept_new(&*store, &claimed, true).await;
    accept_new(&*store, &queued, true).await;
    assert_eq!(
        ids(&store.claim(agent, 1).await.expect("claim")),
        ids(std::slice::from_ref(&claimed))
    );
    let why = RunError::cancelled("requested");
    let cancelled = store
        .cancel_queued(agent, queued.run.request_id, why.clone())
        .await
        .expect("cancel")
        .expect("it was queued");
    assert_eq!(cancelled.run.status, RunStatus::Cancelled);
    assert_eq!(cancelled.run.error, Some(why.clone()));
    assert!(cancelled.run.finished_at.is_some());
    assert_eq!(
        cancelled.run.push.as_ref().map(|p| p.status),
        Some(PushStatus::Pending)
    );
    assert_eq!(
        get(&*store, queued.run.request_id).await,
        Some(cancelled.clone())
    );
    let due = store
        .due_pushes(Utc::now() + Duration::seconds(1), 10_000)
        .await
        .expect("due");
    assert!(due.iter().any(|e| e.rid == queued.run.request_id));
    for rid in [
        queued.run.request_id,
        claimed.run.request_id,
        Uuid::now_v7(),
    ] {
        let again = store
            .cancel_queued(agent, rid, why.clone())
            .await
            .expect("cancel");
        assert_eq!(again, None);
    }
    assert_eq!(
        get(&*store, claimed.run.request_id)
            .await
            .map(|r| r.run.status),
        Some(RunStatus::Running)
    );
}

/// A paused run is resumed once, by its own agent only.
pub async fn resume_takes_a_paused_run_once(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let mut run = new_run(agent, Mode::Async, json!({}));
    run.run.status = RunStatus::InputRequired;
    run.run.pending = Some(json!({"kind": "input", "node": "ask"}));
    store.put(run.clone()).await.expect("put");
    assert_eq!(get(&*store, run.run.request_id).await, Some(run.clone()));
    let rid = run.run.request_id;
    assert_eq!(
        store.resume(Uuid::now_v7(), rid).await.expect("resume"),
        None
    );
    let resumed = store
        .resume(agent, rid)
        .await
        .expect("resume")
        .expect("paused");
    assert_eq!(resumed.run.status, RunStatus::Running);
    assert_eq!(resumed.run.pending, None);
    assert_eq!(store.resume(agent, rid).await.expect("resume"), None);
    assert_eq!(get(&*store, rid).await, Some(resumed));
}

/// Due entries come earliest first and only once due; rescheduling moves an entry and stores the
/// run in one write; rescheduling to none removes it.
pub async fn outbox_is_due_in_order_and_reschedules_atomically(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    // Far in the past, so that no other case's entries come first; whole milliseconds, the
    // outbox's precision.
    let past = (Utc::now() - Duration::days(3650)).timestamp_millis();
    let base = chrono::DateTime::from_timestamp_millis(past).expect("a valid time");
    let mut runs = Vec::new();
    for (i, offset) in [30, 10, 20].into_iter().enumerate() {
        let mut run = new_run(agent, Mode::Async, json!({ "i": i }));
        run.push_enabled = true;
        accept_new(&*store, &run, true).await;
        run.finish(RunStatus::Succeeded, Some(json!(i)), None);
        run.schedule_push();
        store
            .finish(run.clone(), Some(base + Duration::seconds(offset)))
            .await
            .expect("finish");
        runs.push(run);
    }
    assert_eq!(
        store.next_push_due().await.expect("next"),
        Some(base + Duration::seconds(10))
    );
    let due = store
        .due_pushes(base + Duration::seconds(20), 10)
        .await
        .expect("due");
    assert_eq!(
        due.iter().map(|e| e.rid).collect::<Vec<_>>(),
        vec![runs[1].run.request_id, runs[2].run.request_id]
    );
    let first = due[0];
    let mut moved = runs[1].clone();
    if let Some(push) = moved.run.push.as_mut() {
        push.attempts = 1;
        push.last_status = Some(500);
    }
    let later = base + Duration::seconds(40);
    store
        .reschedule_push(first, moved.clone(), Some(later))
        .await
        .expect("reschedule");
    assert_eq!(
        get(&*store, moved.run.request_id).await,
        Some(moved.clone())
    );
    let due = store.due_pushes(later, 10).await.expect("due");
    assert_eq!(
        due.iter().map(|e| e.rid).collect::<Vec<_>>(),
        vec![
            runs[2].run.request_id,
            runs[0].run.request_id,
            moved.run.request_id
        ]
    );
    for entry in due {
        let run = get(&*store, entry.rid).await.expect("stored");
        store
            .reschedule_push(entry, run, None)
            .await
            .expect("settle");
    }
    assert!(store.due_pushes(later, 10).await.expect("due").is_empty());
}

/// Runs left `running` are found (for recovery); queued and final ones are not.
pub async fn running_lists_runs_left_running(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let sync = keyed(new_run(agent, Mode::Sync, json!({})), "admin", "k");
    let queued = new_run(agent, Mode::Async, json!({}));
    accept_new(&*store, &sync, false).await;
    accept_new(&*store, &queued, true).await;
    let running = ids(&store.running().await.expect("running"));
    assert!(running.contains(&sync.run.request_id));
    assert!(!running.contains(&queued.run.request_id));
    let mut done = sync.clone();
    done.finish(RunStatus::Succeeded, Some(json!(1)), None);
    store.finish(done, None).await.expect("finish");
    let running = ids(&store.running().await.expect("running"));
    assert!(!running.contains(&sync.run.request_id));
}

/// A sync run recorded at its end reads back.
pub async fn recorded_sync_runs_read_back(store: Arc<dyn RunStores>) {
    let mut run = new_run(Uuid::now_v7(), Mode::Sync, json!({"q": 1}));
    run.finish(RunStatus::Succeeded, Some(json!("hi")), None);
    store.record(run.clone()).await.expect("record");
    assert_eq!(get(&*store, run.run.request_id).await, Some(run));
}

/// While runs are finished, a reader sees each one either as it was or as it ends: never a mix.
pub async fn a_reader_never_sees_half_a_run(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let mut runs = Vec::new();
    for i in 0..40 {
        let run = new_run(agent, Mode::Async, json!({ "i": i }));
        accept_new(&*store, &run, true).await;
        runs.push(run);
    }
    let claimed = store.claim(agent, 40).await.expect("claim");
    let writes = claimed.into_iter().map(|mut run| {
        run.finish(
            RunStatus::Succeeded,
            Some(json!({"i": run.input["i"]})),
            None,
        );
        store.finish(run, None)
    });
    let reads = runs.iter().map(|r| store.get(r.run.request_id));
    let (writes, reads) = futures_util::future::join(join_all(writes), join_all(reads)).await;
    for w in writes {
        w.expect("finish");
    }
    for (run, read) in runs.iter().zip(reads) {
        let seen = read.expect("get").expect("stored");
        match seen.run.status {
            RunStatus::Queued | RunStatus::Running => assert_eq!(seen.run.output, None),
            RunStatus::Succeeded => {
                assert_eq!(seen.run.output, Some(json!({"i": run.input["i"]})));
                assert!(seen.run.finished_at.is_some());
            }
            other => panic!("unexpected status {other:?}"),
        }
    }
}

/// Purge deletes old final runs with their events; it keeps runs whose push is pending, runs a
/// fresh idempotency key names, and runs not final.
pub async fn purge_keeps_what_must_stay(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let old = Utc::now() - Duration::days(30);
    let finished_long_ago = |mut run: StoredRun| {
        // Made then: request ids are UUID v7 taken when a run is created, which lets a store
        // stop its scan at the cutoff.
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            old.timestamp() as u64,
            old.timestamp_subsec_nanos(),
        );
        run.run.request_id = Uuid::new_v7(ts);
        run.run.created_at = old;
        run.finish(RunStatus::Succeeded, Some(json!(1)), None);
        run.run.finished_at = Some(old);
        run
    };
    let plain = finished_long_ago(new_run(agent, Mode::Async, json!({"p": 1})));
    // More than one batch of a store that purges in batches.
    let many: Vec<StoredRun> = (0..300)
        .map(|i| finished_long_ago(new_run(agent, Mode::Async, json!({ "many": i }))))
        .collect();
    for run in &many {
        store.finish(run.clone(), None).await.expect("finish");
    }
    let mut pushing = finished_long_ago(new_run(agent, Mode::Async, json!({"p": 2})));
    pushing.push_enabled = true;
    let due = pushing.schedule_push();
    let mut keyed_fresh = keyed(
        new_run(agent, Mode::Sync, json!({"p": 3})),
        "admin",
        "fresh",
    );
    accept_new(&*store, &keyed_fresh, false).await;
    keyed_fresh.finish(RunStatus::Succeeded, Some(json!(3)), None);
    keyed_fresh.run.finished_at = Some(old);
    let queued = new_run(agent, Mode::Async, json!({"p": 4}));
    accept_new(&*store, &queued, true).await;
    store.finish(plain.clone(), None).await.expect("finish");
    store.finish(pushing.clone(), due).await.expect("finish");
    store
        .finish(keyed_fresh.clone(), None)
        .await
        .expect("finish");
    store
        .append_run_event(plain.run.request_id, None, "run.finished".into(), json!({}))
        .await
        .expect("event");
    let purged = store
        .purge(Utc::now() - Duration::days(7))
        .await
        .expect("purge");
    assert!(purged >= 301);
    assert_eq!(get(&*store, plain.run.request_id).await, None);
    for run in &many {
        assert_eq!(get(&*store, run.run.request_id).await, None);
    }
    let events = store
        .run_events(plain.run.request_id, 0, 10)
        .await
        .expect("events");
    assert!(events.is_empty(), "a purged run's events go with it");
    for kept in [&pushing, &keyed_fresh, &queued] {
        assert!(
            get(&*store, kept.run.request_id).await.is_some(),
            "purge must keep {:?}",
            kept.input
        );
    }
    let again = keyed(
        new_run(agent, Mode::Sync, json!({"p": 3})),
        "admin",
        "fresh",
    );
    assert!(matches!(
        store.accept(again, false).await.expect("accept"),
        Accepted::Existing(_)
    ));
}

/// Events of a run are numbered 1, 2, … in append order, read from any point, and never mixed
/// with another run's.
pub async fn run_events_are_numbered_per_run(store: Arc<dyn RunStores>) {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    for i in 0..5 {
        let e = store
            .append_run_event(a, None, "node.finished".into(), json!({ "i": i }))
            .await
            .expect("append");
        assert_eq!(e.seq, i + 1);
        assert_eq!(e.kind, "node.finished");
        store
            .append_run_event(b, None, "other".into(), json!(i))
            .await
            .expect("append");
    }
    let all = store.run_events(a, 0, 100).await.expect("read");
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(all.iter().all(|e| e.kind == "node.finished"));
    assert_eq!(all[2].data, json!({"i": 2}));
    let tail = store.run_events(a, 3, 1).await.expect("read");
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
    assert!(store.run_events(a, 5, 10).await.expect("read").is_empty());
    // A batch continues the numbering, in its order, and reads back whole.
    let batch = store
        .append_run_events(
            a,
            None,
            vec![("x".into(), json!(1)), ("y".into(), json!(2))],
        )
        .await
        .expect("append a batch");
    assert_eq!(batch.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7]);
    let read = store.run_events(a, 5, 10).await.expect("read");
    assert_eq!(
        read.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["x", "y"]
    );
    assert!(store
        .append_run_events(a, None, Vec::new())
        .await
        .expect("an empty batch")
        .is_empty());
    assert!(store
        .run_events(Uuid::now_v7(), 0, 10)
        .await
        .expect("read")
        .is_empty());
}

/// Events recorded the way a sync call's record is kept are numbered with the appended ones of
/// their run, readable at once, sealed with their thread like any other, and a run whose last
/// event was written numbers on from where it stopped (a paused run resumed).
pub async fn recorded_and_appended_events_share_one_numbering(store: Arc<dyn RunStores>) {
    let (agent, rid) = (Uuid::now_v7(), Uuid::now_v7());
    let thread = ThreadOf {
        agent,
        scope: "recorded".into(),
    };
    let recorded = store
        .record_run_events(
            rid,
            Some(thread.clone()),
            vec![
                ("run.started".into(), json!({"said": "hello"})),
                ("node.finished".into(), json!({"said": "world"})),
            ],
        )
        .await
        .expect("record");
    assert_eq!(recorded.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    let appended = store
        .append_run_event(
            rid,
            Some(thread.clone()),
            "run.input_required".into(),
            json!({}),
        )
        .await
        .expect("append");
    assert_eq!(appended.seq, 3);
    let resumed = store
        .record_run_events(
            rid,
            Some(thread.clone()),
            vec![("run.finished".into(), json!({"said": "bye"}))],
        )
        .await
        .expect("record");
    assert_eq!(resumed[0].seq, 4);
    let read = store.run_events(rid, 0, 10).await.expect("read");
    assert_eq!(
        read.iter()
            .map(|e| (e.seq, e.kind.as_str()))
            .collect::<Vec<_>>(),
        [
            (1, "run.started"),
            (2, "node.finished"),
            (3, "run.input_required"),
            (4, "run.finished")
        ]
    );
    assert_eq!(read[1].data, json!({"said": "world"}));
    store
        .delete_thread(agent, "recorded".into())
        .await
        .expect("delete");
    let gone = store.run_events(rid, 0, 10).await.expect("read");
    assert_eq!(gone.len(), 4, "the kinds stay");
    assert!(
        gone.iter().all(|e| !e.data.to_string().contains("said")),
        "what the thread's run said is gone: {gone:?}"
    );
}

/// Turns come back oldest first, the last N of them; deleting a thread removes all its turns and
/// nothing of a thread whose id it prefixes, or of another agent.
pub async fn threads_keep_turns_in_order_and_delete_them_all(store: Arc<dyn RunStores>) {
    let (agent, other) = (Uuid::now_v7(), Uuid::now_v7());
    let turn = |i: i64| Turn {
        request_id: Uuid::now_v7(),
        input: json!({ "i": i }),
        output: Some(json!(i * 10)),
        at: Utc::now(),
    };
    let mut written = Vec::new();
    for i in 0..4 {
        let t = turn(i);
        store
            .append_turn(agent, "t".into(), t.clone())
            .await
            .expect("append");
        written.push(t);
    }
    store
        .append_turn(agent, "t2".into(), turn(99))
        .await
        .expect("append");
    store
        .append_turn(other, "t".into(), turn(98))
        .await
        .expect("append");
    assert_eq!(
        store.turns(agent, "t".into(), 20).await.expect("turns"),
        written
    );
    assert_eq!(
        store.turns(agent, "t".into(), 2).await.expect("turns"),
        written[2..].to_vec()
    );
    assert!(store
        .delete_thread(agent, "t".into())
        .await
        .expect("delete"));
    assert!(store
        .turns(agent, "t".into(), 20)
        .await
        .expect("turns")
        .is_empty());
    assert!(!store
        .delete_thread(agent, "t".into())
        .await
        .expect("delete"));
    // A thread id may be used again after its deletion: a new thread, with none of the old.
    let fresh = turn(7);
    store
        .append_turn(agent, "t".into(), fresh.clone())
        .await
        .expect("append");
    assert_eq!(
        store.turns(agent, "t".into(), 20).await.expect("turns"),
        vec![fresh]
    );
    assert_eq!(
        store
            .turns(agent, "t2".into(), 20)
            .await
            .expect("turns")
            .len(),
        1
    );
    assert_eq!(
        store
            .turns(other, "t".into(), 20)
            .await
            .expect("turns")
            .len(),
        1
    );
}

pub async fn runs_are_listed_per_agent_newest_first(store: Arc<dyn RunStores>) {
    let (agent, other) = (Uuid::now_v7(), Uuid::now_v7());
    let mut mine = Vec::new();
    for i in 0..5 {
        let run = new_run(agent, Mode::Async, json!({ "i": i }));
        mine.push(run.run.request_id);
        assert_eq!(
            store.accept(run, true).await.expect("accept"),
            Accepted::New
        );
        let theirs = new_run(other, Mode::Async, json!({ "i": i }));
        store.accept(theirs, true).await.expect("accept");
    }
    mine.reverse();
    let ids = |runs: Vec<StoredRun>| runs.iter().map(|r| r.run.request_id).collect::<Vec<_>>();
    let first = store.list_runs(agent, None, 2).await.expect("list");
    assert_eq!(ids(first), mine[..2]);
    let rest = store
        .list_runs(agent, Some(mine[1]), 10)
        .await
        .expect("list");
    assert_eq!(ids(rest), mine[2..]);
    assert!(store
        .list_runs(Uuid::now_v7(), None, 10)
        .await
        .expect("list")
        .is_empty());
}

/// Deleting a thread erases what was said in its runs, not only its turns: each run keeps its
/// record without its input, output and pending, and its events keep their numbers and kinds
/// without their data. Another thread's runs keep everything.
pub async fn deleting_a_thread_erases_what_its_runs_said(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let in_thread = |thread: &str, said: &str| {
        let mut run = new_run(agent, Mode::Async, json!({ "message": said }));
        run.run.thread_id = Some(thread.into());
        run
    };
    let gone = in_thread("gone", "forget me");
    let kept = in_thread("kept", "keep me");
    for run in [&gone, &kept] {
        accept_new(&*store, run, false).await;
        let mut ended = run.clone();
        ended.finish(RunStatus::Succeeded, Some(json!("an answer")), None);
        store.finish(ended, None).await.expect("finish");
        for kind in ["node.finished", "run.finished"] {
            store
                .append_run_event(
                    run.run.request_id,
                    run.thread_of(),
                    kind.into(),
                    json!({ "said": run.input["message"] }),
                )
                .await
                .expect("event");
        }
    }
    let scope = gone.thread_key().expect("a thread");
    assert!(store.delete_thread(agent, scope).await.expect("delete"));

    let after = get(&*store, gone.run.request_id)
        .await
        .expect("still listed");
    assert_eq!(after.run.status, RunStatus::Succeeded);
    assert!(!serde_json::to_string(&after)
        .expect("json")
        .contains("forget me"));
    assert_eq!(after.run.output, None);
    let events = store
        .run_events(gone.run.request_id, 0, 10)
        .await
        .expect("events");
    assert_eq!(
        events
            .iter()
            .map(|e| (e.seq, e.kind.as_str()))
            .collect::<Vec<_>>(),
        [(1, "node.finished"), (2, "run.finished")]
    );
    assert!(
        events.iter().all(|e| e.data == json!({"deleted": true})),
        "{events:?}"
    );

    let other = get(&*store, kept.run.request_id).await.expect("kept");
    assert_eq!(other.input["message"], "keep me");
    assert_eq!(other.run.output, Some(json!("an answer")));
    let events = store
        .run_events(kept.run.request_id, 0, 10)
        .await
        .expect("events");
    assert_eq!(events[0].data, json!({"said": "keep me"}));
}

/// `max_concurrency` in the store: racing takes of one agent's slots never hold more than its
/// limit between them; a slot frees when its run is released, finished or recorded, and a run
/// taking its own slot again keeps the one it has.
pub async fn slots_never_exceed_the_limit_and_free_when_runs_end(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let runs: Vec<StoredRun> = (0..8)
        .map(|i| new_run(agent, Mode::Sync, json!({ "i": i })))
        .collect();
    let takes = join_all(
        runs.iter()
            .map(|run| store.take_slot(agent, run.run.request_id, 3)),
    )
    .await;
    let holders: Vec<&StoredRun> = runs
        .iter()
        .zip(&takes)
        .filter(|(_, taken)| *taken.as_ref().expect("take_slot"))
        .map(|(run, _)| run)
        .collect();
    assert_eq!(holders.len(), 3, "exactly the limit's slots were taken");
    let other = Uuid::now_v7();
    assert!(
        store
            .take_slot(other, Uuid::now_v7(), 1)
            .await
            .expect("take_slot"),
        "slots are per agent"
    );
    let late = new_run(agent, Mode::Sync, json!("late"));
    let rid = late.run.request_id;
    assert!(!store.take_slot(agent, rid, 3).await.expect("take_slot"));
    assert!(
        store
            .take_slot(agent, holders[0].run.request_id, 3)
            .await
            .expect("take_slot"),
        "a holder keeps its slot"
    );
    // Released: one is free.
    store
        .release_slot(agent, holders[0].run.request_id)
        .await
        .expect("release_slot");
    assert!(store.take_slot(agent, rid, 3).await.expect("take_slot"));
    assert!(!store
        .take_slot(agent, Uuid::now_v7(), 3)
        .await
        .expect("take_slot"));
    // Finished (a keyed run's end) and recorded (an unkeyed sync run's end): both free theirs.
    let mut finished = holders[1].clone();
    finished.finish(RunStatus::Succeeded, Some(json!(1)), None);
    store.finish(finished, None).await.expect("finish");
    let mut recorded = holders[2].clone();
    recorded.finish(RunStatus::Succeeded, Some(json!(2)), None);
    store.record(recorded).await.expect("record");
    for _ in 0..2 {
        assert!(store
            .take_slot(agent, Uuid::now_v7(), 3)
            .await
            .expect("take_slot"));
    }
    assert!(!store
        .take_slot(agent, Uuid::now_v7(), 3)
        .await
        .expect("take_slot"));
}

/// A claim within the slots takes no more runs than slots are free, oldest first, each claimed
/// run holding a slot until it ends; racing claims together stay within the limit.
pub async fn claims_in_slots_take_no_more_than_the_free_slots(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let runs: Vec<StoredRun> = (0..6)
        .map(|i| new_run(agent, Mode::Async, json!({ "i": i })))
        .collect();
    for run in &runs {
        accept_new(&*store, run, true).await;
    }
    let sync = new_run(agent, Mode::Sync, json!("sync"));
    assert!(store
        .take_slot(agent, sync.run.request_id, 3)
        .await
        .expect("take_slot"));
    let claims = join_all((0..4).map(|_| store.claim_in_slots(agent, 5, 3))).await;
    let mut claimed = Vec::new();
    for claim in claims {
        claimed.extend(claim.expect("claim_in_slots"));
    }
    claimed.sort_by_key(|run| run.run.request_id);
    assert_eq!(ids(&claimed), ids(&runs[..2]), "two slots were free");
    assert_eq!(store.queued(agent).await.expect("queued"), 4);
    assert!(store
        .claim_in_slots(agent, 5, 3)
        .await
        .expect("claim_in_slots")
        .is_empty());
    // A claimed run that ends frees its slot for the next queued run.
    let mut done = claimed[0].clone();
    done.finish(RunStatus::Succeeded, None, None);
    store.finish(done, None).await.expect("finish");
    let next = store
        .claim_in_slots(agent, 5, 3)
        .await
        .expect("claim_in_slots");
    assert_eq!(ids(&next), ids(&runs[2..3]));
    assert_eq!(next[0].run.status, RunStatus::Running);
    assert!(!store
        .take_slot(agent, Uuid::now_v7(), 3)
        .await
        .expect("take_slot"));
}

/// A thread's turn: racing takes give it to one run; its holder takes it again; it passes on
/// only once released, and only its holder's release counts. Threads are per agent.
pub async fn a_thread_is_held_by_one_run_at_a_time(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let thread = "conv-1".to_string();
    let rids: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    let takes = join_all(
        rids.iter()
            .map(|rid| store.take_thread(agent, thread.clone(), *rid)),
    )
    .await;
    let holders: Vec<Uuid> = rids
        .iter()
        .zip(&takes)
        .filter(|(_, taken)| *taken.as_ref().expect("take_thread"))
        .map(|(rid, _)| *rid)
        .collect();
    assert_eq!(holders.len(), 1, "one run holds the thread");
    let holder = holders[0];
    let other = *rids
        .iter()
        .find(|rid| **rid != holder)
        .expect("another run");
    assert!(store
        .take_thread(agent, thread.clone(), holder)
        .await
        .expect("take_thread"));
    assert!(
        store
            .take_thread(agent, "conv-2".into(), other)
            .await
            .expect("take_thread"),
        "another thread is free"
    );
    assert!(
        store
            .take_thread(Uuid::now_v7(), thread.clone(), other)
            .await
            .expect("take_thread"),
        "threads are per agent"
    );
    // A release by a run that does not hold it changes nothing.
    store
        .release_thread(agent, thread.clone(), other)
        .await
        .expect("release_thread");
    assert!(!store
        .take_thread(agent, thread.clone(), other)
        .await
        .expect("take_thread"));
    store
        .release_thread(agent, thread.clone(), holder)
        .await
        .expect("release_thread");
    assert!(store
        .take_thread(agent, thread.clone(), other)
        .await
        .expect("take_thread"));
    assert!(!store
        .take_thread(agent, thread, holder)
        .await
        .expect("take_thread"));

    // Accept order: of the runs that wait, the oldest takes the thread when it frees, even if
    // a younger one asks first.
    let agent = Uuid::now_v7();
    let thread = "conv-order".to_string();
    let (first, older, younger) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let take = |rid| store.take_thread(agent, thread.clone(), rid);
    assert!(take(first).await.expect("take_thread"));
    assert!(!take(younger).await.expect("take_thread"));
    assert!(!take(older).await.expect("take_thread"));
    store
        .release_thread(agent, thread.clone(), first)
        .await
        .expect("release_thread");
    assert!(
        !take(younger).await.expect("take_thread"),
        "an older run waits for the thread"
    );
    assert!(take(older).await.expect("take_thread"));
    // A waiting run that stops (cancelled) no longer holds younger ones back once it let go.
    let stopped = Uuid::now_v7();
    let last = Uuid::now_v7();
    assert!(!take(stopped).await.expect("take_thread"));
    store
        .release_thread(agent, thread.clone(), stopped)
        .await
        .expect("release_thread");
    store
        .release_thread(agent, thread.clone(), older)
        .await
        .expect("release_thread");
    assert!(take(younger).await.expect("take_thread"));
    store
        .release_thread(agent, thread.clone(), younger)
        .await
        .expect("release_thread");
    assert!(take(last).await.expect("take_thread"));
}
