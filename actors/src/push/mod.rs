//! Push: each async run's final Run, POSTed to the client's webhook, signed the Standard Webhooks
//! way, at least once, across restarts.
//!
//! # Layout
//! - [`signature`]: `webhook-signature` values from a `whsec_…` secret.
//! - [`schedule`]: when a failed delivery is tried again (jitter, `Retry-After`), and when it is
//!   given up.
//! - `delivery`: one attempt: the signed POST (15 s, redirects not followed) and what its answer
//!   means.
//! - `outbox`: the [`Pusher`] actor: scans the durable `push_outbox` tree of the
//!   [`RunStore`](crate::runtime::RunStore), delivers due entries concurrently and
//!   records each outcome in the run's `push` before the entry moves on.

mod delivery;
mod outbox;
pub mod schedule;
pub mod signature;

pub use delivery::TIMEOUT;
pub use outbox::{NoMetrics, PushMetrics, Pusher, Wake, MAX_IN_FLIGHT};
pub use schedule::Schedule;
pub use signature::sign;

#[cfg(test)]
mod tests;
