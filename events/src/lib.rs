//! The domain of Hangar and its log. Knows nothing of actix or HTTP.
//!
//! # Layout
//! - [`spec`]: the agent specification a team edits (the draft), flows and their nodes.
//! - [`connection`], [`endpoint`]: connections with their credentials, and endpoint settings.
//! - [`check`]: what a connection check found, and a connection's status from its latest checks.
//! - [`egress`]: the destinations no outbound request may reach, judged without I/O.
//! - [`secret`]: sealing credentials with the server's AEAD key; redaction.
//! - [`event`]: the domain events, one file per kind, each applying itself to the state.
//! - [`envelope`]: how an event is stored, and the SHA-256 hash chain over a stream.
//! - [`state`]: the agent as the fold of its events.
//! - [`key`]: invocation keys: their format and hash.
//! - [`command`]: what a client asks for, checked against the state and turned into events.
//! - [`validation`]: the draft's errors and warnings, which block deploy.
//! - [`run`]: runs, their progress events and threads' turns: the records of the run stores.
//! - [`store`]: the store traits (`EventStore`, `RunStore`, `RunEventStore`, `ThreadStore`), their
//!   sled implementation, their conformance suites, chain verification.

pub mod check;
pub mod command;
pub mod connection;
pub mod egress;
pub mod endpoint;
pub mod envelope;
pub mod event;
pub mod key;
mod rejection;
pub mod run;
pub mod secret;
pub mod spec;
pub mod state;
pub mod store;
pub mod validation;

pub use envelope::{Envelope, NewEvent};
pub use event::Event;
pub use rejection::Rejection;
pub use state::AgentState;
