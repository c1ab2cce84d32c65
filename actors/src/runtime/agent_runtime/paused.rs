//! Runs that wait for a person: pausing a run in flight (`input_required`, stored with its
//! checkpoint), resuming it with a person's answer, cancelling it while it waits, and the hook
//! that tells the rest of the system it paused.

use std::time::Instant;

use actix::prelude::*;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{answer, cancelled, fail, reply_from, AgentRuntime, Reply};
use crate::flow::{Checkpoint, Resume};
use crate::runtime::{RunError, RunStatus, Runtime, StoredRun};
use crate::Error;
use events::Rejection;
use tokio::sync::oneshot;

use super::lanes::{Held, ThreadFree};

impl AgentRuntime {
    /// A run in flight paused for a person: stored `input_required` with what it waits for and
    /// where it resumes (durable, and pushed when its version pushes), then its caller answered
    /// with it; its slot and its thread are free meanwhile.
    pub(super) fn pause(&mut self, rid: Uuid, pending: Value, checkpoint: Checkpoint) {
        let Some(entry) = self.running.remove(&rid) else {
            return;
        };
        self.rt.in_flight_changed(-1);
        let mut run = entry.run;
        if !entry.persist {
            // A preview is not stored, so nothing could resume it.
            self.previews = self.previews.saturating_sub(1);
            let error = RunError::new(
                "input_required",
                "the draft paused for a person's input; a preview cannot be resumed: deploy to try it",
                json!({ "pending": pending }),
            );
            run.finish(RunStatus::Failed, None, Some(error));
            answer(entry.reply.into_iter().collect(), &Ok(run));
            return;
        }
        run.run.status = RunStatus::InputRequired;
        run.run.pending = Some(pending);
        run.checkpoint = match serde_json::to_value(&checkpoint) {
            Ok(value) => Some(value),
            Err(e) => {
                let error = RunError::new(
                    "internal",
                    format!("cannot keep the run's place: {e}"),
                    Value::Null,
                );
                let replies = entry.reply.into_iter().collect();
                let ending = (RunStatus::Failed, None, Some(error));
                self.finalize(run, true, replies, entry.started, ending, true);
                return;
            }
        };
        self.rt.metrics().run_entered(RunStatus::InputRequired);
        let push_due = run.schedule_push();
        let stored = self.rt.runs().finish(run.clone(), push_due);
        // After the paused state's write, like `run.finished`: a reader told finds it paused.
        let recorder = self.recorders.remove(&rid);
        if let Some(recorder) = &recorder {
            recorder.input_required(&run.run.pending.clone().unwrap_or(Value::Null));
        }
        let (rt, agent, me) = (self.rt.clone(), self.agent, self.me.clone());
        let reply = entry.reply;
        actix::spawn(async move {
            let stored = stored.await;
            match &stored {
                // Without a recorder (none was started), the event is written here.
                Ok(()) if recorder.is_none() => on_input_required(&rt, &run).await,
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(request_id = %rid, error = %e, "cannot store a paused run")
                }
            }
            if let Some(thread) = run.thread_key() {
                super::slots::release_thread(&rt, agent, &thread, rid).await;
                if let Some(me) = me {
                    me.do_send(ThreadFree { thread, rid });
                }
            }
            rt.waiters().wake(rid);
            if push_due.is_some() {
                rt.wake_pusher();
            }
            tracing::info!(request_id = %rid, %agent, "run paused for input");
            answer(
                reply.into_iter().collect(),
                &stored.map(|()| run).map_err(Error::from),
            );
        });
    }
}

/// The hook for what else should learn that a run paused: its `run.input_required` run event
/// now; the run-events stream reads it from there.
async fn on_input_required(rt: &Runtime, run: &StoredRun) {
    let data = json!({ "pending": run.run.pending });
    let appended = rt.runs().append_run_event(
        run.run.request_id,
        run.thread_of(),
        "run.input_required".into(),
        data,
    );
    if let Err(e) = appended.await {
        tracing::warn!(request_id = %run.run.request_id, error = %e, "cannot record run.input_required");
    }
}

/// Cancels a paused run: taken from the store as a resume would (so a racing resume gets it
/// once), then stored cancelled.
pub(super) async fn cancel_paused(
    rt: &Runtime,
    agent: Uuid,
    rid: Uuid,
    reason: &str,
) -> Result<StoredRun, Error> {
    let Some(mut run) = rt.runs().resume(agent, rid).await? else {
        return Err(Error::Unavailable(
            "the run is being resumed; cancel it again in a moment".into(),
        ));
    };
    let (status, output, error) = cancelled(reason);
    run.checkpoint = None;
    run.finish(status, output, error);
    let push_due = run.schedule_push();
    rt.runs().finish(run.clone(), push_due).await?;
    crate::runtime::run_events::record_finished(rt.runs(), &run).await;
    rt.metrics().run_entered(RunStatus::Cancelled);
    rt.waiters().wake(rid);
    if push_due.is_some() {
        rt.wake_pusher();
    }
    Ok(run)
}

/// A person's answer to a paused run (`POST .../requests/{rid}/input`): the run goes on in the
/// background. Answers with the run as resumed (`running`).
#[derive(Message)]
#[rtype(result = "Result<StoredRun, Error>")]
pub struct ResumeRun {
    pub rid: Uuid,
    pub answer: crate::flow::Answer,
}

impl Handler<ResumeRun> for AgentRuntime {
    type Result = Reply<StoredRun>;

    fn handle(&mut self, msg: ResumeRun, ctx: &mut Self::Context) -> Self::Result {
        if self.closed {
            return fail(Rejection::NotDeployed);
        }
        if self.live().is_none() {
            // Undeployed while it waited: it can never go on, so it ends here (`undeployed`).
            let (rt, agent, rid) = (self.rt.clone(), self.agent, msg.rid);
            return Box::pin(async move {
                cancel_paused(&rt, agent, rid, "undeployed").await?;
                Err(Rejection::NotDeployed.into())
            });
        }
        let (agent, rid) = (self.agent, msg.rid);
        let resumed = self.rt.runs().resume(agent, rid);
        let (tx, rx) = oneshot::channel();
        ctx.spawn(resumed.into_actor(self).map(move |resumed, act, ctx| {
            let mut run = match resumed {
                Ok(Some(run)) => run,
                Ok(None) => {
                    // Not paused (any more): say what it is.
                    let rt = act.rt.clone();
                    actix::spawn(async move {
                        let result = match rt.runs().get(rid).await {
                            Ok(Some(r)) if r.run.agent_id == agent => {
                                Err(Error::NotWaiting(r.run.status.as_str()))
                            }
                            Ok(_) => Err(Rejection::not_found(format!("request {rid}")).into()),
                            Err(e) => Err(e.into()),
                        };
                        let _ = tx.send(result);
                    });
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                    return;
                }
            };
            let checkpoint = run
                .checkpoint
                .take()
                .and_then(|c| serde_json::from_value::<Checkpoint>(c).ok());
            let Some(checkpoint) = checkpoint else {
                let error = RunError::new(
                    "checkpoint_lost",
                    "the place where the run paused is gone (its thread was deleted?)",
                    Value::Null,
                );
                let ending = (RunStatus::Failed, None, Some(error));
                act.finalize(run, true, vec![tx], Instant::now(), ending, true);
                return;
            };
            let _ = tx.send(Ok(run.clone()));
            let resume = Resume {
                checkpoint,
                answer: msg.answer,
            };
            match run.thread_key() {
                Some(thread) if !act.lanes.free(&thread) => {
                    act.reserved += 1;
                    act.lanes.wait(&thread, rid, Held::Resumed { run, resume });
                }
                Some(thread) => {
                    act.lanes.enter(&thread, rid);
                    act.launch_queued(run, Some(resume), ctx);
                }
                None => act.launch_queued(run, Some(resume), ctx),
            }
        }));
        reply_from(rx)
    }
}
