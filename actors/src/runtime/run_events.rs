//! Run events: the numbered progress of each run (`run.started`, `node.finished`, `model.delta`,
//! …), written through the [`RunEventStore`] and fanned out live to whoever streams them.
//!
//! A run never waits for its events. Its flow hands each event to the run's [`Recorder`] (a
//! local queue, no I/O), and one writer task per run drains the queue in batches: it creates the
//! store's one append for the batch (`RunEventStore::append_run_events`: one transaction, one
//! group commit) and only then publishes them to the [`RunEventHub`], so an
//! event a reader sees live is always in the store too. When the writer falls behind, consecutive
//! `model.delta`s of a node are merged in the queue, which keeps it bounded by the flow's size.
//!
//! Live fan-out goes through a bounded `broadcast` channel per run: publishing never blocks, and
//! a reader that falls behind loses its place in the channel (`Lagged`) and catches up from the
//! store ([`crate::runtime::Runtime::run_event_stream`]). A slow reader therefore costs the run and
//! the other readers nothing.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use events::run::{RunEvent, StoredRun, ThreadOf};
use events::store::RunStores;
use serde_json::{json, Value};
use tokio::sync::{broadcast, Notify};
use uuid::Uuid;

use crate::flow::Progress;

/// Events a live reader may be behind before it is told to catch up from the store.
const LIVE_BUFFER: usize = 256;

/// How long a run's writer nobody follows waits for more events before writing the ones it has
/// (see `Recorder::start`), and how often it looks for a follower meanwhile.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);
const LINGER_STEP: std::time::Duration = std::time::Duration::from_millis(1);

/// Queued events past which a writer that is behind merges consecutive `model.delta`s.
const MERGE_DELTAS_PAST: usize = 64;

/// The runs in flight on this node whose events can be followed live, and who may see them.
#[derive(Default)]
pub struct RunEventHub {
    runs: Mutex<HashMap<Uuid, Live>>,
}

struct Live {
    agent: Uuid,
    /// The run's member: only callers who may see its runs follow it.
    member: Option<String>,
    /// Made by the first reader: most runs are never followed live, and a channel of
    /// [`LIVE_BUFFER`] slots per run cost the sync endpoint a measurable share of its CPU.
    sender: Option<broadcast::Sender<RunEvent>>,
}

/// A live run as the hub knows it: whose it is, and its events from now on.
pub struct LiveRun {
    pub agent: Uuid,
    pub member: Option<String>,
    pub events: broadcast::Receiver<RunEvent>,
}

impl RunEventHub {
    fn open(&self, rid: Uuid, agent: Uuid, member: Option<String>) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(
                rid,
                Live {
                    agent,
                    member,
                    sender: None,
                },
            );
        }
    }

    fn publish(&self, rid: Uuid, event: RunEvent) {
        if let Ok(runs) = self.runs.lock() {
            if let Some(sender) = runs.get(&rid).and_then(|live| live.sender.as_ref()) {
                // No receiver is not an error: nobody follows this run right now.
                let _ = sender.send(event);
            }
        }
    }

    fn close(&self, rid: Uuid) {
        if let Ok(mut runs) = self.runs.lock() {
            // Dropping the sender tells every live reader the run has no more live events.
            runs.remove(&rid);
        }
    }

    /// Follows run `rid` live, if it is in flight on this node.
    pub fn subscribe(&self, rid: Uuid) -> Option<LiveRun> {
        let mut runs = self.runs.lock().ok()?;
        let live = runs.get_mut(&rid)?;
        let sender = live
            .sender
            .get_or_insert_with(|| broadcast::channel(LIVE_BUFFER).0);
        Some(LiveRun {
            agent: live.agent,
            member: live.member.clone(),
            events: sender.subscribe(),
        })
    }

    /// Whether someone follows run `rid` live now.
    fn followed(&self, rid: Uuid) -> bool {
        self.runs.lock().is_ok_and(|runs| {
            runs.get(&rid)
                .and_then(|live| live.sender.as_ref())
                .is_some_and(|sender| sender.receiver_count() > 0)
        })
    }

    /// Runs followed live on this node now.
    pub fn len(&self) -> usize {
        self.runs.lock().map(|r| r.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The event recorder of one run: a local queue its flow and its runtime append to without
/// waiting, drained by the run's writer task. Cheap to clone (one run, one queue).
#[derive(Clone)]
pub struct Recorder {
    queue: Rc<RefCell<Queue>>,
    wake: Rc<Notify>,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<(&'static str, Value)>,
    /// `run.finished` is queued: nothing more is accepted, and the writer stops once drained.
    closed: bool,
    /// The node running now, which `model.delta`s belong to.
    node: Option<String>,
}

impl Recorder {
    /// Starts recording run `rid` of `agent`: opens its live channel and spawns its writer on
    /// the current arbiter (the one its flow runs on). Must be called inside an actix system.
    /// `durable`: whether the events are as durable as an accepted run (else they are kept as a
    /// sync call's record is, `RunEventStore::record_run_events`).
    pub fn start(
        store: Arc<dyn RunStores>,
        hub: Arc<RunEventHub>,
        rid: Uuid,
        agent: Uuid,
        member: Option<String>,
        thread: Option<ThreadOf>,
        durable: bool,
    ) -> Recorder {
        hub.open(rid, agent, member);
        let recorder = Recorder {
            queue: Rc::new(RefCell::new(Queue::default())),
            wake: Rc::new(Notify::new()),
        };
        let (queue, wake) = (recorder.queue.clone(), recorder.wake.clone());
        actix::spawn(async move {
            loop {
                // Unless someone follows the run live, lets it go on a moment before writing what
                // it has reported: a short run (most are) then stores all its events,
                // `run.finished` included, in one write instead of one per wake-up.
                let lingering = {
                    let q = queue.borrow();
                    !q.closed && !q.pending.is_empty()
                };
                if lingering {
                    let until = tokio::time::Instant::now() + LINGER;
                    while !queue.borrow().closed
                        && !hub.followed(rid)
                        && tokio::time::Instant::now() < until
                    {
                        let _ = tokio::time::timeout(LINGER_STEP, wake.notified()).await;
                    }
                }
                let (batch, closed) = {
                    let mut q = queue.borrow_mut();
                    (std::mem::take(&mut q.pending), q.closed)
                };
                if batch.is_empty() {
                    if closed {
                        break;
                    }
                    wake.notified().await;
                    continue;
                }
                // One write for everything that queued up meanwhile.
                let events = batch
                    .into_iter()
                    .map(|(kind, data)| (kind.to_owned(), data))
                    .collect();
                let written = if durable {
                    store.append_run_events(rid, thread.clone(), events)
                } else {
                    store.record_run_events(rid, thread.clone(), events)
                };
                match written.await {
                    Ok(events) => {
                        for event in events {
                            hub.publish(rid, event);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(request_id = %rid, error = %e, "run events were not stored")
                    }
                }
            }
            hub.close(rid);
        });
        recorder
    }

    fn push(&self, kind: &'static str, data: Value) {
        let mut q = self.queue.borrow_mut();
        if q.closed {
            return;
        }
        if kind == "model.delta" && q.pending.len() >= MERGE_DELTAS_PAST {
            if let Some(("model.delta", last)) = q.pending.back_mut() {
                if last["node"] == data["node"] {
                    let more = data["text"].as_str().unwrap_or_default();
                    if let Some(Value::String(text)) = last.get_mut("text") {
                        text.push_str(more);
                        return;
                    }
                }
            }
        }
        q.pending.push_back((kind, data));
        drop(q);
        self.wake.notify_one();
    }

    /// `run.queued`: for a run that waited in its agent's queue.
    pub fn queued(&self) {
        self.push("run.queued", json!({}));
    }

    /// `run.started {version, request_id}` (the id, so that a caller of `/invoke/stream` who
    /// loses the connection knows which run to follow again).
    pub fn started(&self, version: u32, rid: Uuid) {
        self.push(
            "run.started",
            json!({ "version": version, "request_id": rid }),
        );
    }

    /// A step of the flow.
    pub fn progress(&self, progress: Progress) {
        match progress {
            Progress::NodeStarted { node, kind } => {
                self.queue.borrow_mut().node = Some(node.clone());
                self.push("node.started", json!({"node": node, "type": kind}));
            }
            Progress::NodeFinished { node, output } => {
                self.push("node.finished", json!({"node": node, "output": output}));
            }
            Progress::ModelDelta { text } => {
                let node = self.queue.borrow().node.clone();
                self.push("model.delta", json!({"node": node, "text": text}));
            }
            Progress::ToolCalled { node, tool, status } => {
                self.push(
                    "tool.called",
                    json!({"node": node, "tool": tool, "status": status}),
                );
            }
        }
    }

    /// `run.input_required {pending}`: the run paused for a person. It leaves this recorder
    /// (resumed, it runs with a new one), so nothing more is taken after it.
    pub fn input_required(&self, pending: &Value) {
        self.push("run.input_required", json!({ "pending": pending }));
        self.queue.borrow_mut().closed = true;
        self.wake.notify_one();
    }

    /// `run.finished {run}`, always the last: the recorder takes nothing after it.
    pub fn finished(&self, run: &events::run::Run) {
        self.push("run.finished", json!({ "run": run }));
        self.queue.borrow_mut().closed = true;
        self.wake.notify_one();
    }
}

/// `run.finished` for a run that ended without running here (cancelled while queued,
/// interrupted by a crash, its version gone): nothing else writes its events then. Resolves
/// once it is stored; a failure is logged, not returned (the run's final state is what counts).
pub fn record_finished(
    store: &Arc<dyn RunStores>,
    run: &StoredRun,
) -> impl std::future::Future<Output = ()> + 'static {
    let rid = run.run.request_id;
    let written = store.append_run_event(
        rid,
        run.thread_of(),
        "run.finished".into(),
        json!({ "run": run.run }),
    );
    async move {
        if let Err(e) = written.await {
            tracing::warn!(request_id = %rid, error = %e, "run.finished was not stored");
        }
    }
}

/// Events read from the store per page while catching up.
const PAGE: usize = 256;

/// How often a reader of a run not in flight on this node looks for new events in the store
/// (the run is queued, runs on another node, or is over).
const POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// How long a final run's stream waits for its `run.finished` before closing anyway (runs
/// stored before run events existed have none).
const FINISHED_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Events handed to one reader ahead of what it has taken: a reader that stops reading holds
/// this many, and the run goes on without it.
const READER_BUFFER: usize = 16;

/// Follows run `rid`'s events with seq > `after`, oldest first, each once, ending after
/// `run.finished` (or with an error). Live events come from the hub while the run is in flight
/// here; anything missed (a reader that fell behind, a run on another node or in the queue) is
/// read from the store, where every published event already is. Dropping the receiver stops
/// the reader; it never touches the run. Must be called inside an actix system.
pub fn follow(
    store: Arc<dyn RunStores>,
    hub: Arc<RunEventHub>,
    rid: Uuid,
    after: u64,
) -> tokio::sync::mpsc::Receiver<Result<RunEvent, events::store::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(READER_BUFFER);
    actix::spawn(async move {
        let mut last = after;
        let mut live = hub.subscribe(rid).map(|l| l.events);
        let mut final_since: Option<tokio::time::Instant> = None;
        loop {
            // Catch up from the store.
            let mut caught_up = false;
            while !caught_up {
                let page = match store.run_events(rid, last, PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                caught_up = page.len() < PAGE;
                for event in page {
                    last = event.seq;
                    let finished = event.kind == "run.finished";
                    if tx.send(Ok(event)).await.is_err() || finished {
                        return;
                    }
                }
            }
            match live.as_mut() {
                Some(events) => match tokio::select! {
                    received = events.recv() => received,
                    // The reader went away while the run was quiet.
                    () = tx.closed() => return,
                } {
                    Ok(event) if event.seq <= last => {}
                    Ok(event) if event.seq == last + 1 => {
                        last = event.seq;
                        let finished = event.kind == "run.finished";
                        if tx.send(Ok(event)).await.is_err() || finished {
                            return;
                        }
                    }
                    // A gap, or fell behind: the store has what was missed.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => live = None,
                },
                None => {
                    if tx.is_closed() {
                        return;
                    }
                    // A final run whose `run.finished` does not come: stored without events.
                    match store.get(rid).await {
                        Ok(Some(run)) if run.run.status.is_final() => {
                            let since = *final_since.get_or_insert_with(tokio::time::Instant::now);
                            if since.elapsed() >= FINISHED_GRACE {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                    tokio::time::sleep(POLL).await;
                    live = hub.subscribe(rid).map(|l| l.events);
                }
            }
        }
    });
    rx
}
