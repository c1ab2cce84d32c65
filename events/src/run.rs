//! A run: one request served by one version of an agent, from acceptance to a final state, and
//! what is kept beside it: its numbered progress events and the turns of its thread.
//!
//! These are the records of the run stores ([`crate::store::RunStore`] and its siblings); the
//! runtime decides how they change, the stores only keep them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    /// Paused until a person answers (`pending` says what is asked); not final.
    InputRequired,
}

impl RunStatus {
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            RunStatus::Queued | RunStatus::Running | RunStatus::InputRequired
        )
    }

    pub const ALL: [RunStatus; 7] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::TimedOut,
        RunStatus::Cancelled,
        RunStatus::InputRequired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Cancelled => "cancelled",
            RunStatus::InputRequired => "input_required",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Sync,
    Async,
}

/// Why a run did not succeed. `code` is stable: `timeout`, `cancelled`, `interrupted`, or the
/// failing node's code (`tool_failed`, `missing_member_credentials`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunError {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub details: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PushStatus {
    Pending,
    Delivered,
    Failed,
}

/// Delivery of the final Run to the client's webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PushState {
    pub status: PushStatus,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the next attempt is due, while pending.
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// The Run as clients see it (the contract's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub request_id: Uuid,
    pub agent_id: Uuid,
    pub version: u32,
    pub status: RunStatus,
    pub output: Option<Value>,
    pub error: Option<RunError>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub push: Option<PushState>,
    /// What a paused run (`input_required`) waits for; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Value>,
    /// For a collaborator's run: the run whose `agent` node called it, which cancels it when it
    /// ends first. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRun>,
    /// The conversation thread the run belongs to, if any: runs of one thread run one at a
    /// time, in the order accepted, and each final one adds a turn to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
}

/// A run as stored: the client's view plus what the runtime needs to (re)start it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRun {
    #[serde(flatten)]
    pub run: Run,
    pub mode: Mode,
    /// The caller's input: whole while the run may still need it (queued, running, paused); once
    /// the run has ended, only what [`kept_input`] keeps.
    pub input: Value,
    /// The caller's `X-Hangar-Member`, for `member` connections.
    #[serde(default)]
    pub member: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Who may find this run again by its `Idempotency-Key`: `"admin"` or the invocation key's
    /// id. Keys are scoped to it, so two callers' `order-123` are two requests. Absent in runs
    /// stored before keys were scoped.
    #[serde(default)]
    pub caller: Option<String>,
    /// [`fingerprint`] of the request's body: the same key with another body is refused rather
    /// than answered with the first request's result.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Whether the version that accepted it pushes results.
    #[serde(default)]
    pub push_enabled: bool,
    /// Where a paused run (`input_required`) resumes: the flow's position and what its nodes
    /// produced so far (`actors::flow::Checkpoint`). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Value>,
    /// Where an A2A client asked for this task's push notifications (instead of the endpoint's
    /// webhook). Absent for runs not made over A2A with a push config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2a_push: Option<A2aPush>,
}

/// An A2A push notification config, kept with its task; its secrets sealed
/// ([`crate::secret::Place::a2a_push`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct A2aPush {
    /// The config's id (the client's, or one made for it).
    pub id: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<crate::secret::Sealed>,
    /// `authentication.scheme`, e.g. `Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<crate::secret::Sealed>,
}

/// What a store keeps of a stored run when the runtime writes the whole run again: the A2A push
/// config, which clients set and delete through the store while the runtime holds the run
/// (possibly on another node), and the push state that goes with it. Read from a stored
/// record's JSON without the rest of it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct StoredPush {
    #[serde(default)]
    pub a2a_push: Option<A2aPush>,
    #[serde(default)]
    pub push: Option<PushState>,
}

impl StoredPush {
    /// Whether the stored run's push is pending with its entry due at `due` (the outbox's
    /// millisecond precision): that entry is the delivery of the config stored now.
    pub fn is_due_at(&self, due: DateTime<Utc>) -> bool {
        self.push.as_ref().is_some_and(|p| {
            p.status == PushStatus::Pending
                && p.next_attempt_at.map(|at| at.timestamp_millis()) == Some(due.timestamp_millis())
        })
    }
}

/// A change of a task's A2A push config (one per task), from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum A2aPushChange {
    /// The task's config becomes this one.
    Set(A2aPush),
    /// The task's config goes, if it is the one with this id (not one that replaced it).
    Delete(String),
}

/// What [`StoredRun::change_a2a_push`] changes in the push outbox.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutboxChange {
    /// The entry (its due time) of a delivery that no longer stands, to remove.
    pub remove: Option<DateTime<Utc>>,
    /// A delivery to add, due then.
    pub add: Option<DateTime<Utc>>,
}

/// The run that started another (a collaborator's run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ParentRun {
    pub agent_id: Uuid,
    pub request_id: Uuid,
}

/// One numbered step of a run's progress (`run.started`, `node.finished`, …), kept with the run
/// and purged with it. `seq` counts from 1 within the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Value,
    pub at: DateTime<Utc>,
}

/// Whether `id` may name a thread: 1-128 characters of `A-Za-z0-9._:-`.
pub fn is_thread_id(id: &str) -> bool {
    (1..=MAX_THREAD_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Where a thread's turns are kept: the thread id as the caller named it, within the caller's
/// member when it acts as one, so that members of one agent never read or join each other's
/// threads. A member is named by a digest (its name may be long and hold any character); thread
/// ids hold no `/`, so no two scopes meet.
pub fn thread_scope(member: Option<&str>, thread: &str) -> String {
    use sha2::{Digest, Sha256};
    match member {
        None => thread.to_owned(),
        Some(m) => format!(
            "{}/{thread}",
            &hex::encode(Sha256::digest(m.as_bytes()))[..16]
        ),
    }
}

/// The longest thread id.
pub const MAX_THREAD_ID: usize = 128;

/// One finished run of a thread: what was asked and answered, in the order runs were accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub request_id: Uuid,
    pub input: Value,
    pub output: Option<Value>,
    pub at: DateTime<Utc>,
}

/// A stable digest of what a request asks for (its input, and later its thread and options), so
/// that a reused `Idempotency-Key` can be told apart from a repeat. Objects are hashed with their
/// keys sorted: `{"a":1,"b":2}` and `{"b":2,"a":1}` are the same request.
pub fn fingerprint(input: &Value) -> String {
    use sha2::{Digest, Sha256};
    let mut text = Vec::new();
    crate::envelope::write_canonical(input, &mut text);
    hex::encode(Sha256::digest(&text))
}

/// [`fingerprint`] of a request's body: its input, and its thread when it names one (so that
/// requests without a thread keep the fingerprints they always had).
pub fn request_fingerprint(input: &Value, thread: Option<&str>) -> String {
    match thread {
        None => fingerprint(input),
        Some(thread) => fingerprint(&serde_json::json!({"input": input, "thread_id": thread})),
    }
}

impl PushState {
    /// A delivery not tried yet, due at `due`.
    pub fn pending(due: DateTime<Utc>) -> Self {
        PushState {
            status: PushStatus::Pending,
            attempts: 0,
            last_status: None,
            delivered_at: None,
            next_attempt_at: Some(due),
        }
    }
}

/// The thread a run belongs to, as the stores file it: what deleting the thread erases (the
/// run's content, its run events, the thread's turns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadOf {
    pub agent: Uuid,
    /// [`thread_scope`]: the thread id within its member's scope.
    pub scope: String,
}

impl StoredRun {
    /// The scope of the run's thread ([`thread_scope`]), if it has one.
    pub fn thread_key(&self) -> Option<String> {
        let thread = self.run.thread_id.as_deref()?;
        Some(thread_scope(self.member.as_deref(), thread))
    }

    /// The run's thread as the stores file it, if it has one.
    pub fn thread_of(&self) -> Option<ThreadOf> {
        Some(ThreadOf {
            agent: self.run.agent_id,
            scope: self.thread_key()?,
        })
    }

    /// Whether the run's end is pushed: to the endpoint's webhook (async runs of a version that
    /// pushes), or to the task's A2A push config (any run that has one, whatever its mode: a
    /// blocking `SendMessage` may be given one by another request while it runs).
    pub fn pushes(&self) -> bool {
        (self.mode == Mode::Async && self.push_enabled) || self.a2a_push.is_some()
    }

    /// For a final (or paused) run that [`pushes`](StoredRun::pushes): marks its delivery
    /// pending now and returns when it is due (for the outbox); `None` for runs that push nothing.
    pub fn schedule_push(&mut self) -> Option<DateTime<Utc>> {
        if !self.pushes() {
            return None;
        }
        let due = Utc::now();
        self.run.push = Some(PushState::pending(due));
        Some(due)
    }

    /// Applies `change` to the task's A2A push config, as a store's `change_a2a_push` does,
    /// and says what changes in the outbox; `None` when nothing changes (a delete naming
    /// another config than the task's). A final task given a config gets one delivery of its
    /// final state to it, due now (in place of one still pending); a task that loses its
    /// config loses the delivery still pending for it, unless the endpoint's webhook takes it.
    /// A task still on its way keeps no delivery: its end (or pause) schedules one, from the
    /// config stored then.
    pub fn change_a2a_push(&mut self, change: A2aPushChange) -> Option<OutboxChange> {
        let config = match change {
            A2aPushChange::Set(config) => Some(config),
            A2aPushChange::Delete(id) if self.a2a_push.as_ref().is_some_and(|c| c.id == id) => None,
            A2aPushChange::Delete(_) => return None,
        };
        Some(self.set_a2a_push(config))
    }

    fn set_a2a_push(&mut self, config: Option<A2aPush>) -> OutboxChange {
        let pending = self
            .run
            .push
            .as_ref()
            .filter(|p| p.status == PushStatus::Pending)
            .map(|p| p.next_attempt_at);
        self.a2a_push = config;
        let mut change = OutboxChange::default();
        if self.a2a_push.is_some() {
            if self.run.status.is_final() {
                change.remove = pending.flatten();
                let due = Utc::now();
                self.run.push = Some(PushState::pending(due));
                change.add = Some(due);
            }
        } else if let Some(due) = pending {
            if !self.pushes() {
                change.remove = due;
                self.run.push = match self.run.push.take() {
                    // Tried already: the run shows that it was given up.
                    Some(push) if push.attempts > 0 => Some(PushState {
                        status: PushStatus::Failed,
                        next_attempt_at: None,
                        ..push
                    }),
                    _ => None,
                };
            }
        }
        change
    }

    /// `self` as a store's `finish` writes it when the stored record's A2A push config is not
    /// the one `self` holds (it was set or deleted through the store while the runtime held
    /// the run): the stored config, the push it decides (due at `push_due`, or now), and when
    /// that is due. `None` when they agree: `self` and `push_due` stand.
    pub fn with_stored_push(
        &self,
        stored: &StoredPush,
        push_due: Option<DateTime<Utc>>,
    ) -> Option<(StoredRun, Option<DateTime<Utc>>)> {
        if stored.a2a_push == self.a2a_push {
            return None;
        }
        let mut run = self.clone();
        run.a2a_push = stored.a2a_push.clone();
        let settled = run.run.status.is_final() || run.run.status == RunStatus::InputRequired;
        if settled && run.pushes() {
            let due = push_due.unwrap_or_else(Utc::now);
            run.run.push = Some(PushState::pending(due));
            Some((run, Some(due)))
        } else {
            // What was pushed before (a pause's delivery), not a push for a config now gone.
            run.run.push = stored.push.clone();
            Some((run, None))
        }
    }

    /// Ends the run. Its input is no longer needed to run it, so from here on only what
    /// [`kept_input`] keeps of it is stored for the retention period.
    pub fn finish(&mut self, status: RunStatus, output: Option<Value>, error: Option<RunError>) {
        self.run.status = status;
        self.run.output = output;
        self.run.error = error;
        self.run.finished_at = Some(Utc::now());
        self.input = kept_input(std::mem::take(&mut self.input));
    }
}

/// The largest input, as compact JSON, that an ended run keeps whole.
pub const KEPT_INPUT_BYTES: usize = 64 * 1024;

/// What an ended run keeps of its input: all of it up to [`KEPT_INPUT_BYTES`], else the marker
/// `{"truncated": true, "bytes": N}` with N its size. Every run would otherwise keep up to the
/// 4 MiB a body may carry for the whole retention period (7 days), with no bound on the disk
/// that takes; 64 KiB keeps what an operator reads when looking into a run, and a prefix of a
/// larger document would be neither valid JSON nor the request.
pub fn kept_input(input: Value) -> Value {
    let bytes = json_len(&input);
    if bytes <= KEPT_INPUT_BYTES {
        input
    } else {
        serde_json::json!({"truncated": true, "bytes": bytes})
    }
}

/// The length of `value` as compact JSON, counted without building the text.
pub fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, and a `Value` always serializes.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

impl RunError {
    pub fn new(code: impl Into<String>, message: impl Into<String>, details: Value) -> Self {
        RunError {
            code: code.into(),
            message: message.into(),
            details,
        }
    }

    pub fn cancelled(reason: &str) -> Self {
        RunError::new(
            "cancelled",
            match reason {
                "undeployed" => "the agent was undeployed while the run was in flight",
                _ => "the run was cancelled",
            },
            serde_json::json!({ "reason": reason }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_run_round_trips() {
        let run = StoredRun {
            run: Run {
                request_id: Uuid::now_v7(),
                agent_id: Uuid::now_v7(),
                version: 3,
                status: RunStatus::Succeeded,
                output: Some(serde_json::json!({"a": 1})),
                error: None,
                created_at: Utc::now(),
                started_at: Some(Utc::now()),
                finished_at: Some(Utc::now()),
                push: Some(PushState {
                    status: PushStatus::Pending,
                    attempts: 1,
                    last_status: Some(500),
                    delivered_at: None,
                    next_attempt_at: Some(Utc::now()),
                }),
                pending: None,
                parent: None,
                thread_id: None,
            },
            mode: Mode::Async,
            input: serde_json::json!({"q": "x"}),
            member: Some("alice".into()),
            idempotency_key: Some("k".into()),
            caller: Some("admin".into()),
            fingerprint: Some(fingerprint(&serde_json::json!({"q": "x"}))),
            push_enabled: true,
            a2a_push: None,
            checkpoint: None,
        };
        let bytes = serde_json::to_vec(&run).expect("serializes");
        let back: StoredRun = serde_json::from_slice(&bytes).expect("decodes");
        assert_eq!(back, run);
    }

    /// Guards against every run keeping its whole input (up to 4 MiB) for the retention period.
    #[test]
    fn an_ended_run_keeps_a_small_input_whole_and_a_large_one_as_a_marker() {
        let mut small = run_with(serde_json::json!({"q": "x"}));
        small.finish(RunStatus::Succeeded, None, None);
        assert_eq!(small.input, serde_json::json!({"q": "x"}));

        let text = "y".repeat(KEPT_INPUT_BYTES);
        let large_input = serde_json::json!({ "doc": text });
        let bytes = serde_json::to_vec(&large_input).expect("serializes").len();
        assert_eq!(json_len(&large_input), bytes);
        let mut large = run_with(large_input.clone());
        let fingerprint = large.fingerprint.clone();
        large.finish(RunStatus::Failed, None, None);
        assert_eq!(
            large.input,
            serde_json::json!({"truncated": true, "bytes": bytes})
        );
        assert_eq!(
            large.fingerprint, fingerprint,
            "repeats are still told apart"
        );

        // Exactly at the bound it is kept.
        let at = serde_json::json!("z".repeat(KEPT_INPUT_BYTES - 2));
        assert_eq!(json_len(&at), KEPT_INPUT_BYTES);
        assert_eq!(kept_input(at.clone()), at);
    }

    fn run_with(input: Value) -> StoredRun {
        StoredRun {
            run: Run {
                request_id: Uuid::now_v7(),
                agent_id: Uuid::now_v7(),
                version: 1,
                status: RunStatus::Running,
                output: None,
                error: None,
                created_at: Utc::now(),
                started_at: Some(Utc::now()),
                finished_at: None,
                push: None,
                pending: None,
                parent: None,
                thread_id: None,
            },
            mode: Mode::Sync,
            fingerprint: Some(fingerprint(&input)),
            input,
            member: None,
            idempotency_key: Some("k".into()),
            caller: Some("admin".into()),
            push_enabled: false,
            a2a_push: None,
            checkpoint: None,
        }
    }

    fn a2a_config(id: &str) -> A2aPush {
        A2aPush {
            id: id.into(),
            url: "http://127.0.0.1:9/hook".into(),
            token: None,
            scheme: None,
            credentials: None,
        }
    }

    /// Guards against a deleted config taking the endpoint's webhook push with it, and against a
    /// delivery that was tried already vanishing without a trace.
    #[test]
    fn deleting_a_config_cancels_only_a_push_nothing_else_takes() {
        let mut run = run_with(serde_json::json!({}));
        run.mode = Mode::Async;
        run.push_enabled = true;
        run.a2a_push = Some(a2a_config("c"));
        run.finish(RunStatus::Succeeded, None, None);
        let due = run.schedule_push().expect("pushes");
        let change = run.change_a2a_push(A2aPushChange::Delete("c".into()));
        assert_eq!(
            change,
            Some(OutboxChange::default()),
            "the webhook takes it"
        );
        assert_eq!(run.run.push, Some(PushState::pending(due)));

        let mut tried = run_with(serde_json::json!({}));
        tried.a2a_push = Some(a2a_config("c"));
        tried.finish(RunStatus::Failed, None, None);
        let due = tried.schedule_push().expect("pushes, whatever its mode");
        if let Some(push) = tried.run.push.as_mut() {
            push.attempts = 2;
            push.last_status = Some(503);
        }
        assert_eq!(
            tried.change_a2a_push(A2aPushChange::Delete("other".into())),
            None,
            "another config's id changes nothing"
        );
        let change = tried.change_a2a_push(A2aPushChange::Delete("c".into()));
        assert_eq!(
            change,
            Some(OutboxChange {
                remove: Some(due),
                add: None
            })
        );
        let push = tried.run.push.expect("the attempts stay visible");
        assert_eq!((push.status, push.attempts), (PushStatus::Failed, 2));
        assert_eq!(push.next_attempt_at, None);
    }

    #[test]
    fn a_fingerprint_ignores_key_order_but_not_values() {
        let a = fingerprint(&serde_json::json!({"a": 1, "b": [1, {"y": 2, "x": 1}]}));
        let b = fingerprint(&serde_json::json!({"b": [1, {"x": 1, "y": 2}], "a": 1}));
        let c = fingerprint(&serde_json::json!({"a": 1, "b": [1, {"x": 1, "y": 3}]}));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
