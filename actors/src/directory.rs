//! Validation needs to know whether other agents exist and are live. Asking their actors would
//! let two agents that name each other deadlock while both deploy, so the directory reads their
//! logs (from their latest snapshot) in the store instead: a consistent view as of their last
//! append.

use std::sync::Arc;

use events::store::{current_state, EventStore};
use events::validation::{Collaborator, Directory};
use uuid::Uuid;

#[derive(Clone)]
pub struct StoreDirectory {
    store: Arc<dyn EventStore>,
}

impl StoreDirectory {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        StoreDirectory { store }
    }
}

impl Directory for StoreDirectory {
    fn collaborator(&self, id: Uuid) -> Option<Collaborator> {
        let state = current_state(&*self.store, id).ok()?;
        if !state.exists() {
            return None;
        }
        Some(Collaborator {
            name: state.draft.name.clone(),
            live: state.live_version.is_some(),
        })
    }
}
