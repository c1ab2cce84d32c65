//! The outbox's worker: the [`Pusher`] actor delivers due entries of the `push_outbox` tree.
//!
//! The outbox lives in sled beside the runs, so a delivery survives a restart: a new pusher
//! simply finds the entries that are due. Each entry is delivered by one task at a time; its new
//! state (delivered, failed, or pending with the next due time) replaces the entry atomically
//! and is flushed before the task ends. A crash between a receiver's 2xx and that flush means
//! one more delivery with the same `webhook-id`: at least once, never silently lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use events::secret::{Cipher, Place};
use tracing::Instrument;
use uuid::Uuid;

use super::delivery::{self, Answer, Target};
use super::schedule::Schedule;
use super::signature::sign;
use crate::{Error, Registry};
use events::run::{PushStatus, RunStatus, StoredRun};
use events::store::{DuePush, RunStore};

/// Deliveries in flight at once, per pusher.
pub const MAX_IN_FLIGHT: usize = 32;

/// How often the outbox is scanned for due entries, besides [`Wake`].
const POLL_EVERY: Duration = Duration::from_millis(200);

/// How long a delivery waits when the agent's state cannot be read right now (its actor is
/// being rebuilt). Not an attempt: the receiver was never asked.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);

/// The counters a pusher feeds.
pub trait PushMetrics: Send + Sync + 'static {
    /// A request was sent to a receiver, whatever came of it.
    fn attempt(&self);
    /// A request sent did not deliver: not a 2xx, or no answer in time.
    fn failure(&self);
}

/// Counts nothing.
pub struct NoMetrics;

impl PushMetrics for NoMetrics {
    fn attempt(&self) {}
    fn failure(&self) {}
}

/// Look at the outbox now, e.g. right after a run was finished with a push due.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Wake;

/// Delivers the push outbox. Start one per process, on one arbiter, and build it inside
/// `start_in_arbiter`'s closure (or with `start()` on the arbiter it runs on): its HTTP client is
/// made in `started` and is not `Send`.
pub struct Pusher {
    runs: Arc<dyn RunStore>,
    /// Where the push URL, token and signing secret come from.
    registry: Registry,
    cipher: Arc<Cipher>,
    schedule: Arc<Schedule>,
    metrics: Arc<dyn PushMetrics>,
    /// One client for every delivery of this pusher, created on the actor's own thread.
    client: Option<awc::Client>,
    /// Request ids being delivered: a request is never sent twice at once.
    in_flight: HashSet<Uuid>,
    /// Outbox entries whose run cannot be read or rescheduled: skipped until the next start,
    /// rather than retried on every scan.
    skipped: HashSet<DuePush>,
    /// A scan of the outbox is on its way: one at a time.
    scanning: bool,
}

impl Pusher {
    pub fn new(
        runs: Arc<dyn RunStore>,
        registry: Registry,
        cipher: Arc<Cipher>,
        schedule: Schedule,
        metrics: Arc<dyn PushMetrics>,
    ) -> Self {
        Pusher {
            runs,
            registry,
            cipher,
            schedule: Arc::new(schedule),
            metrics,
            client: None,
            in_flight: HashSet::new(),
            skipped: HashSet::new(),
            scanning: false,
        }
    }

    /// Scans the outbox for due entries, then starts a delivery for each one not already in
    /// flight, up to [`MAX_IN_FLIGHT`].
    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.client.is_none() || self.scanning || self.in_flight.len() >= MAX_IN_FLIGHT {
            return;
        }
        // Enough entries that those in flight or skipped cannot hide the rest.
        let limit = MAX_IN_FLIGHT * 2 + self.skipped.len();
        self.scanning = true;
        let scan = self.runs.due_pushes(Utc::now(), limit);
        ctx.spawn(scan.into_actor(self).map(|due, act, ctx| {
            act.scanning = false;
            match due {
                Ok(due) => act.dispatch(due, ctx),
                Err(e) => tracing::error!(error = %e, "the push outbox could not be read"),
            }
        }));
    }

    fn dispatch(&mut self, due: Vec<DuePush>, ctx: &mut Context<Self>) {
        let Some(client) = &self.client else { return };
        for entry in due {
            if self.in_flight.len() >= MAX_IN_FLIGHT {
                break;
            }
            let rid = entry.rid;
            if self.skipped.contains(&entry) || !self.in_flight.insert(rid) {
                continue;
            }
            let courier = Courier {
                runs: self.runs.clone(),
                registry: self.registry.clone(),
                cipher: self.cipher.clone(),
                schedule: self.schedule.clone(),
                metrics: self.metrics.clone(),
                client: client.clone(),
            };
            let job = courier
                .deliver(entry)
                .instrument(tracing::info_span!("push", request_id = %rid));
            ctx.spawn(job.into_actor(self).map(move |done, act, ctx| {
                act.in_flight.remove(&rid);
                if done == Done::Skip {
                    act.skipped.insert(entry);
                }
                act.poll(ctx);
            }));
        }
    }
}

impl Actor for Pusher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.client = Some(delivery::client());
        ctx.run_interval(POLL_EVERY, |act, ctx| act.poll(ctx));
        self.poll(ctx);
    }
}

/// Under a `Supervisor`, a restart drops the deliveries in flight; their entries stay due.
impl Supervised for Pusher {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.in_flight.clear();
    }
}

impl Handler<Wake> for Pusher {
    type Result = ();

    fn handle(&mut self, _msg: Wake, ctx: &mut Self::Context) {
        self.poll(ctx);
    }
}

/// What became of one outbox entry.
#[derive(Debug, PartialEq, Eq)]
enum Done {
    /// Delivered, given up, or rescheduled.
    Settled,
    /// Its run could not be read or stored: leave it alone until the next start.
    Skip,
}

/// Why a run's push target could not be built.
enum Unresolved {
    /// Try again shortly, without counting an attempt.
    Later(String),
    /// It can never be delivered: give up.
    Never(String),
}

/// What one delivery task needs: the pusher's shared parts.
struct Courier {
    runs: Arc<dyn RunStore>,
    registry: Registry,
    cipher: Arc<Cipher>,
    schedule: Arc<Schedule>,
    metrics: Arc<dyn PushMetrics>,
    client: awc::Client,
}

impl Courier {
    /// Makes one attempt at outbox entry `key` and records what came of it.
    async fn deliver(self, key: DuePush) -> Done {
        let mut stored = match self.runs.get(key.rid).await {
            Ok(Some(run)) => run,
            Ok(None) => {
                tracing::warn!("a push outbox entry names no stored run; skipped");
                return Done::Skip;
            }
            Err(e) => {
                tracing::error!(error = %e, "the run of a push could not be read; skipped");
                return Done::Skip;
            }
        };
        let Some(mut push) = stored.run.push.clone() else {
            return self.settle(key, &stored, None).await;
        };
        if push.status != PushStatus::Pending {
            // A second entry for a push already settled: just drop it.
            return self.settle(key, &stored, None).await;
        }
        let target = match self.target(&stored).await {
            Ok(target) => target,
            Err(Unresolved::Later(why)) => {
                tracing::warn!(reason = %why, "push postponed");
                let next = after(UNAVAILABLE_RETRY);
                push.next_attempt_at = Some(next);
                stored.run.push = Some(push);
                return self.settle(key, &stored, Some(next)).await;
            }
            Err(Unresolved::Never(why)) => {
                tracing::warn!(reason = %why, "push given up");
                push.status = PushStatus::Failed;
                push.next_attempt_at = None;
                stored.run.push = Some(push);
                return self.settle(key, &stored, None).await;
            }
        };
        // The Run the receiver gets shows the attempt that delivers it (`attempts` counts it,
        // `status` is still `pending`): a receiver seeing `attempts: 2` knows an earlier one
        // failed or went unrecorded. What the attempt came to is recorded only after it.
        push.attempts = push.attempts.saturating_add(1);
        push.next_attempt_at = None;
        let attempts = push.attempts;
        let mut sent = stored.run.clone();
        sent.push = Some(push.clone());
        self.metrics.attempt();
        let body = if target.a2a {
            let mut task_run = stored.clone();
            task_run.run = sent.clone();
            serde_json::to_vec(&serde_json::json!({ "task": crate::a2a::task(&task_run) }))
        } else {
            serde_json::to_vec(&sent)
        }
        .unwrap_or_default();
        let answer = delivery::attempt(&self.client, &target, &sent, body).await;
        let next = match answer {
            Ok(Answer::Delivered(status)) => {
                tracing::info!(attempts, status, "push delivered");
                push.status = PushStatus::Delivered;
                push.last_status = Some(status);
                push.delivered_at = Some(Utc::now());
                None
            }
            Ok(Answer::Gone) => {
                self.metrics.failure();
                tracing::warn!(attempts, "push receiver answered 410 Gone; given up");
                push.status = PushStatus::Failed;
                push.last_status = Some(410);
                None
            }
            Ok(Answer::Failed {
                status,
                retry_after,
            }) => {
                self.metrics.failure();
                push.last_status = status;
                match self.schedule.next_delay(attempts, retry_after) {
                    Some(wait) => {
                        tracing::info!(
                            attempts,
                            ?status,
                            wait_s = wait.as_secs_f64(),
                            "push failed; will retry"
                        );
                        Some(after(wait))
                    }
                    None => {
                        tracing::warn!(
                            attempts,
                            ?status,
                            "push failed; no attempts left, given up"
                        );
                        push.status = PushStatus::Failed;
                        None
                    }
                }
            }
            Err(e) => {
                // Checked while resolving the target, so only a secret that changed under us.
                self.metrics.failure();
                tracing::warn!(error = %e, "push given up");
                push.status = PushStatus::Failed;
                None
            }
        };
        if stored.run.status == RunStatus::InputRequired {
            // The push of a paused run: it may have been resumed (even finished) during the
            // attempt. Its state then is newer than the one read here, and is kept as it is.
            if let Ok(Some(now)) = self.runs.get(key.rid).await {
                if now.run.status != stored.run.status || now.run.pending != stored.run.pending {
                    return self.settle(key, &now, None).await;
                }
            }
        }
        push.next_attempt_at = next;
        stored.run.push = Some(push);
        self.settle(key, &stored, next).await
    }

    /// Replaces the outbox entry by one due at `next` (or none) with the run's new push state,
    /// and waits until that is durable.
    async fn settle(&self, key: DuePush, run: &StoredRun, next: Option<DateTime<Utc>>) -> Done {
        if let Err(e) = self.runs.reschedule_push(key, run.clone(), next).await {
            tracing::error!(error = %e, "a push state could not be stored; skipped");
            return Done::Skip;
        }
        Done::Settled
    }

    /// The URL and token of the version that accepted the run, and the agent's current signing
    /// secret, opened. Reasons never include a secret.
    async fn target(&self, run: &StoredRun) -> Result<Target, Unresolved> {
        let (agent, number) = (run.run.agent_id, run.run.version);
        let state = match self.registry.state(agent).await {
            Ok(state) => state,
            Err(Error::Rejected(_)) => {
                return Err(Unresolved::Never(format!("agent {agent} no longer exists")))
            }
            Err(e) => return Err(Unresolved::Later(e.to_string())),
        };
        if let Some(config) = &run.a2a_push {
            return self.a2a_target(&state, config);
        }
        let never =
            |what: &str| Unresolved::Never(format!("agent {agent} version {number}: {what}"));
        let version = state
            .version(number)
            .ok_or_else(|| never("no such version"))?;
        let settings = &version.snapshot.endpoint.asynchronous;
        let url = settings.url.clone().ok_or_else(|| never("no push url"))?;
        let token = settings
            .token
            .as_ref()
            .ok_or_else(|| never("no push token"))?;
        let token = self
            .cipher
            .open(token, &Place::push_token(agent, Some(&url)))
            .map_err(|_| never("the push token could not be opened"))?;
        let secret = state
            .signing_secret
            .as_ref()
            .ok_or_else(|| never("the agent has no signing secret"))?;
        let secret = self
            .cipher
            .open(secret, &Place::signing_secret(agent))
            .map_err(|_| never("the signing secret could not be opened"))?;
        sign(&secret, "", 0, b"").map_err(|e| never(&e.to_string()))?;
        Ok(Target {
            url,
            authorization: Some(format!("Bearer {token}")),
            headers: Vec::new(),
            secret: Some(secret),
            a2a: false,
        })
    }

    /// An A2A task's own push config: `Authorization: <scheme> <credentials>` when given, the
    /// token in both headers the SDKs use, signed with the agent's secret if it has one.
    fn a2a_target(
        &self,
        state: &events::AgentState,
        config: &events::run::A2aPush,
    ) -> Result<Target, Unresolved> {
        let agent = state.id;
        let never = |what: &str| Unresolved::Never(format!("agent {agent} A2A push: {what}"));
        let open = |sealed: &events::secret::Sealed, field: &str| {
            self.cipher
                .open(sealed, &Place::a2a_push(agent, &config.url, field))
                .map_err(|_| never(&format!("the {field} could not be opened")))
        };
        let mut headers = Vec::new();
        if let Some(token) = &config.token {
            let token = open(token, "token")?;
            headers.push(("X-A2A-Notification-Token", token.clone()));
            headers.push(("A2A-Notification-Token", token));
        }
        let authorization = match (&config.scheme, &config.credentials) {
            (Some(scheme), Some(credentials)) => {
                Some(format!("{scheme} {}", open(credentials, "credentials")?))
            }
            _ => None,
        };
        let secret = match &state.signing_secret {
            Some(secret) => Some(
                self.cipher
                    .open(secret, &Place::signing_secret(agent))
                    .map_err(|_| never("the signing secret could not be opened"))?,
            ),
            None => None,
        };
        Ok(Target {
            url: config.url.clone(),
            authorization,
            headers,
            secret,
            a2a: true,
        })
    }
}

/// `now + wait`, saturating far in the future.
fn after(wait: Duration) -> DateTime<Utc> {
    let now = Utc::now();
    chrono::Duration::from_std(wait)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
