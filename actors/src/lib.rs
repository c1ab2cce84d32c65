//! The actix actors of Hangar. Knows nothing of HTTP.
//!
//! # Layout
//! - [`registry`]: the [`Registry`] handle: activates one [`AgentActor`] per agent on first use,
//!   under an actix `Supervisor`, spread over a few arbiters (threads).
//! - [`agent`]: the [`AgentActor`]: owns one agent's state, rebuilt from its log on start and after
//!   a crash; turns commands into events, appends them with the expected seq, applies them.
//! - [`connection_check`]: one request with a connection's credentials, to prove they
//!   authenticate (under the egress policy, 10 s at most).
//! - [`directory`]: how validation looks up other agents (collaborators) in the store.
//! - [`flow`]: the flow interpreter: templates, knowledge ranking, timeouts, and the effects
//!   (tool and model calls over awc) a run has on the world.
//! - [`runtime`]: deployed agents answering: one [`runtime::AgentRuntime`] per agent, one
//!   executor actor per request, the run store (queue, idempotency, push outbox).
//! - [`egress`]: where outbound HTTP may connect: the SSRF policy, enforced on resolved
//!   addresses by the connector every awc client here uses.
//! - [`error`]: this crate's error type.
//! - [`a2a`]: A2A's view of a run (a task), shared by the A2A binding and A2A push notifications.

pub mod a2a;
pub mod agent;
pub mod connection_check;
pub mod directory;
pub mod egress;
pub mod error;
pub mod flow;
pub mod push;
pub mod registry;
pub mod runtime;

pub use agent::{AgentActor, Execute, GetState, Outcome};
pub use error::Error;
pub use registry::Registry;

#[cfg(test)]
mod tests;
