//! The flow interpreter: runs an agent's flow on one input. Executors (one per request) call
//! [`run`] with an [`Effects`] and drop the future to cancel.
//!
//! # Layout
//! - [`interpreter`]: [`run`] walks the nodes from `flow.start`, keeps `{input, nodes}` as the
//!   context, and bounds the run, each node and each model call by their time limits.
//! - [`deadline`]: the agent > node > model precedence of time limits, and which one fired.
//! - [`template`]: MiniJinja over the context; a lone `{{ expr }}` keeps its JSON type. Fuelled,
//!   no loader.
//! - [`knowledge`]: BM25 ranking of the passages of the knowledge files.
//! - [`indexes`]: one knowledge index per version's snapshot, built on first use, shared by its
//!   runs.
//! - [`agentic`]: the tool loop of a model node with `tools` (and history for the model).
//! - `chat`: the chat-completion call with function tools that the loop makes, over awc.
//! - [`effects`]: the [`Effects`] trait, the interpreter's only way out: models, tools,
//!   collaborators.
//! - [`http_effects`]: [`HttpEffects`], the real effects over awc, with the connections'
//!   credentials opened at call time.
//! - [`model_stream`]: reading a model's reply as it streams (`model.delta` pieces).
//! - [`tool_url`]: the URL of a tool call, refused unless it stays on its connection's server.
//! - `loopback` (tests only): a tiny recording HTTP server on 127.0.0.1.

pub mod agentic;
mod chat;
pub mod deadline;
pub mod effects;
pub mod http_effects;
pub mod indexes;
pub mod interpreter;
pub mod knowledge;
#[cfg(test)]
pub(crate) mod loopback;
pub mod model_stream;
pub mod template;
pub mod tool_url;

pub use deadline::Limit;
pub use effects::{
    ChatReply, EffectError, Effects, Progress, RequestedCall, ToolCall, ToolResponse,
};
pub use http_effects::{AgentCall, HttpEffects};
pub use indexes::IndexCache;
pub use interpreter::{
    run, run_from, Answer, Checkpoint, FlowError, Outcome, Resume, Start, Thread,
};
pub use knowledge::{KnowledgeIndex, Passage};
pub use template::{eval_condition, render, render_path, render_str, TemplateError};
