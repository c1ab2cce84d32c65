use events::Rejection;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The command was refused; the client can fix it.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Store(#[from] events::store::Error),
    /// The agent's actor could not serve the request (it crashed and is being rebuilt, or its
    /// log could not be read); retrying later may succeed.
    #[error("agent unavailable: {0}")]
    Unavailable(String),
    /// `max_concurrency` runs are in flight (sync), or the async queue is full.
    #[error("the agent is at its limit of runs in flight; retry shortly")]
    Overloaded,
    /// The caller's `Idempotency-Key` already names a request with a different body.
    #[error("this Idempotency-Key was used for a request with a different body; use a new key")]
    IdempotencyKeyReused,
    /// A cancel came after the run had already reached a final state.
    #[error("the run already finished")]
    AlreadyFinished(Box<events::run::Run>),
    /// `"multitask": "reject"` and a run of the thread is in flight or waiting.
    #[error("thread '{0}' has a run in flight or waiting; retry once it ends, or send without \"multitask\": \"reject\" to wait your turn")]
    ThreadBusy(String),
    /// Input was sent to a run that is not paused for it.
    #[error("the run is {0}, not input_required: only a paused run takes input")]
    NotWaiting(&'static str),
}
