//! Cases of the run store suite for a task's A2A push config set or deleted through the store
//! ([`crate::store::RunStore::change_a2a_push`]) while the runtime holds the run: the stored config
//! stands over the copy the runtime writes back whole, and decides the push.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{accept_new, get, new_run};
use crate::run::{A2aPush, A2aPushChange, Mode, PushStatus, RunStatus};
use crate::store::runs::RunStores;

fn config(id: &str, url: &str) -> A2aPush {
    A2aPush {
        id: id.into(),
        url: url.into(),
        token: None,
        scheme: Some("Bearer".into()),
        credentials: None,
    }
}

/// Whether the outbox holds an entry for `rid` due by a second from now.
async fn push_due_for(store: &dyn RunStores, rid: Uuid) -> bool {
    store
        .due_pushes(Utc::now() + Duration::seconds(1), 10_000)
        .await
        .expect("due")
        .iter()
        .any(|e| e.rid == rid)
}

/// A config set on a queued run (replacing the one it was sent with) is the one its end is
/// pushed to, even when the runtime finishes it with the copy it claimed before.
pub async fn a_config_set_on_a_queued_run_is_pushed_when_it_ends(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let mut run = new_run(agent, Mode::Async, json!({}));
    run.a2a_push = Some(config("first", "http://127.0.0.1:9/first"));
    accept_new(&*store, &run, true).await;
    let rid = run.run.request_id;
    let mut claimed = store.claim(agent, 1).await.expect("claim");
    let mut held = claimed.pop().expect("the run is claimed");

    let set = store
        .change_a2a_push(
            rid,
            A2aPushChange::Set(config("second", "http://127.0.0.1:9/second")),
        )
        .await
        .expect("set")
        .expect("the run exists");
    assert_eq!(set.a2a_push.as_ref().map(|c| c.id.as_str()), Some("second"));
    assert_eq!(
        set.run.push, None,
        "a run on its way is pushed when it ends"
    );
    assert!(!push_due_for(&*store, rid).await);

    held.finish(RunStatus::Succeeded, Some(json!(1)), None);
    let due = held.schedule_push();
    store.finish(held, due).await.expect("finish");
    let stored = get(&*store, rid).await.expect("stored");
    assert_eq!(
        stored.a2a_push.as_ref().map(|c| c.url.as_str()),
        Some("http://127.0.0.1:9/second"),
        "the config set meanwhile stands"
    );
    assert_eq!(stored.run.status, RunStatus::Succeeded);
    assert_eq!(
        stored.run.push.as_ref().map(|p| p.status),
        Some(PushStatus::Pending)
    );
    assert!(push_due_for(&*store, rid).await);
}

/// A run that had no config when the runtime took it (a blocking call) and was given one while
/// it ran: finishing it with the runtime's copy keeps the config and schedules its push,
/// whatever the run's mode.
pub async fn a_config_set_while_running_survives_finish(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let mut run = new_run(agent, Mode::Sync, json!({}));
    run.run.started_at = Some(Utc::now());
    accept_new(&*store, &run, false).await;
    let rid = run.run.request_id;
    store
        .change_a2a_push(rid, A2aPushChange::Set(config("c", "http://127.0.0.1:9/c")))
        .await
        .expect("set")
        .expect("the run exists");

    run.finish(RunStatus::Succeeded, Some(json!("done")), None);
    let due = run.schedule_push();
    assert_eq!(due, None, "the runtime's copy pushes nothing");
    store.finish(run, due).await.expect("finish");
    let stored = get(&*store, rid).await.expect("stored");
    assert_eq!(stored.a2a_push.as_ref().map(|c| c.id.as_str()), Some("c"));
    assert_eq!(stored.run.output, Some(json!("done")));
    assert_eq!(
        stored.run.push.as_ref().map(|p| p.status),
        Some(PushStatus::Pending)
    );
    assert!(
        push_due_for(&*store, rid).await,
        "its push is in the outbox"
    );

    // Written whole while waiting (`put`), a run keeps its stored config too.
    let mut waiting = new_run(agent, Mode::Async, json!({}));
    accept_new(&*store, &waiting, true).await;
    let wid = waiting.run.request_id;
    store
        .change_a2a_push(wid, A2aPushChange::Set(config("w", "http://127.0.0.1:9/w")))
        .await
        .expect("set")
        .expect("the run exists");
    waiting.run.started_at = Some(Utc::now());
    store.put(waiting).await.expect("put");
    let stored = get(&*store, wid).await.expect("stored");
    assert_eq!(stored.a2a_push.as_ref().map(|c| c.id.as_str()), Some("w"));
    assert!(stored.run.started_at.is_some(), "the rest is the new copy");
}

/// A config set on a run that has ended has its delivery due now; a second one replaces both
/// the config and the delivery.
pub async fn a_config_set_on_a_final_run_is_due_now(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let mut run = new_run(agent, Mode::Sync, json!({}));
    accept_new(&*store, &run, false).await;
    let rid = run.run.request_id;
    run.finish(RunStatus::Failed, None, None);
    store.finish(run, None).await.expect("finish");
    assert!(!push_due_for(&*store, rid).await);

    let set = store
        .change_a2a_push(
            rid,
            A2aPushChange::Set(config("late", "http://127.0.0.1:9/late")),
        )
        .await
        .expect("set")
        .expect("the run exists");
    assert_eq!(set.run.status, RunStatus::Failed);
    let push = set.run.push.clone().expect("a push is scheduled");
    assert_eq!(push.status, PushStatus::Pending);
    assert_eq!(get(&*store, rid).await, Some(set.clone()));
    assert!(push_due_for(&*store, rid).await);

    store
        .change_a2a_push(
            rid,
            A2aPushChange::Set(config("later", "http://127.0.0.1:9/later")),
        )
        .await
        .expect("set again")
        .expect("the run exists");
    let entries = store
        .due_pushes(Utc::now() + Duration::seconds(1), 10_000)
        .await
        .expect("due")
        .into_iter()
        .filter(|e| e.rid == rid)
        .count();
    assert_eq!(
        entries, 1,
        "the second config's delivery replaces the first's"
    );

    assert_eq!(
        store
            .change_a2a_push(
                Uuid::now_v7(),
                A2aPushChange::Set(config("x", "http://127.0.0.1:9/x"))
            )
            .await
            .expect("set on nothing"),
        None
    );
}

/// Deleting a config means no push of it: not at the end of a run given it while running, and
/// a final run's pending delivery leaves the outbox. A delete naming another config, or an
/// attempt that was under way for a config since replaced, changes nothing of the new one.
pub async fn deleting_a_config_cancels_its_push(store: Arc<dyn RunStores>) {
    let agent = Uuid::now_v7();
    let mut run = new_run(agent, Mode::Sync, json!({}));
    run.a2a_push = Some(config("sent", "http://127.0.0.1:9/sent"));
    accept_new(&*store, &run, false).await;
    let rid = run.run.request_id;
    let kept = store
        .change_a2a_push(rid, A2aPushChange::Delete("another".into()))
        .await
        .expect("delete another")
        .expect("the run exists");
    assert_eq!(kept.a2a_push, run.a2a_push, "only the config named goes");
    let deleted = store
        .change_a2a_push(rid, A2aPushChange::Delete("sent".into()))
        .await
        .expect("delete")
        .expect("the run exists");
    assert_eq!(deleted.a2a_push, None);
    run.finish(RunStatus::Succeeded, None, None);
    let due = run.schedule_push();
    assert!(due.is_some(), "the runtime's copy still has the config");
    store.finish(run, due).await.expect("finish");
    let stored = get(&*store, rid).await.expect("stored");
    assert_eq!(stored.a2a_push, None);
    assert_eq!(stored.run.push, None, "nothing is pushed");
    assert!(!push_due_for(&*store, rid).await);

    // A final run with its delivery pending.
    let mut done = new_run(agent, Mode::Sync, json!({}));
    accept_new(&*store, &done, false).await;
    let did = done.run.request_id;
    done.finish(RunStatus::Succeeded, None, None);
    store.finish(done, None).await.expect("finish");
    let attempted = store
        .change_a2a_push(did, A2aPushChange::Set(config("a", "http://127.0.0.1:9/a")))
        .await
        .expect("set")
        .expect("the run exists");
    let entry = store
        .due_pushes(Utc::now() + Duration::seconds(1), 10_000)
        .await
        .expect("due")
        .into_iter()
        .find(|e| e.rid == did)
        .expect("an entry for the config");
    // A courier reads the run, a client replaces the config during the attempt, and the
    // attempt's outcome is stored: the new config's delivery still stands.
    store
        .change_a2a_push(did, A2aPushChange::Set(config("b", "http://127.0.0.1:9/b")))
        .await
        .expect("replace")
        .expect("the run exists");
    let mut outcome = attempted.clone();
    if let Some(push) = outcome.run.push.as_mut() {
        push.status = PushStatus::Delivered;
        push.attempts = 1;
    }
    store
        .reschedule_push(entry, outcome, None)
        .await
        .expect("settle");
    let stored = get(&*store, did).await.expect("stored");
    assert_eq!(stored.a2a_push.as_ref().map(|c| c.id.as_str()), Some("b"));
    assert_eq!(
        stored.run.push.as_ref().map(|p| p.status),
        Some(PushStatus::Pending)
    );
    assert!(push_due_for(&*store, did).await, "b's delivery is due");

    // A delete of the config that was replaced leaves the new one (and its delivery) alone.
    store
        .change_a2a_push(did, A2aPushChange::Delete("a".into()))
        .await
        .expect("delete a")
        .expect("the run exists");
    assert!(
        push_due_for(&*store, did).await,
        "b's delivery is still due"
    );
    store
        .change_a2a_push(did, A2aPushChange::Delete("b".into()))
        .await
        .expect("delete")
        .expect("the run exists");
    let stored = get(&*store, did).await.expect("stored");
    assert_eq!(stored.run.push, None);
    assert!(!push_due_for(&*store, did).await, "its entry is gone");
}
