//! The current state of a stream: the latest snapshot, if it is usable, plus the events after it.

use uuid::Uuid;

use super::{Error, EventStore};
use crate::AgentState;

/// Folds `stream` from its latest snapshot, or from seq 1 when there is none, it claims a seq past
/// the head, or it no longer decodes (e.g. written by another shape of the state). A stream with
/// no events gives a state at seq 0.
pub fn current_state(store: &dyn EventStore, stream: Uuid) -> Result<AgentState, Error> {
    current_state_and_snapshot(store, stream).map(|(state, _)| state)
}

/// [`current_state`], and the seq of the snapshot it started from (0 for none), so that the
/// caller knows how far the stored snapshot lags.
pub fn current_state_and_snapshot(
    store: &dyn EventStore,
    stream: Uuid,
) -> Result<(AgentState, u64), Error> {
    let head = store.head(stream)?;
    let snapshot = store.load_snapshot(stream).ok().flatten();
    let mut state = snapshot
        .filter(|(seq, _)| *seq <= head)
        .and_then(|(_, bytes)| serde_json::from_slice::<AgentState>(&bytes).ok())
        .filter(|s| s.id == stream)
        .unwrap_or_else(|| AgentState::new(stream));
    let snapshot_seq = state.seq;
    for env in store.read(stream, state.seq + 1, usize::MAX)? {
        state.apply(&env);
    }
    Ok((state, snapshot_seq))
}
