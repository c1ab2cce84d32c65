//! What the interpreter asks of the outside world: model replies, tool calls, collaborators.
//!
//! The interpreter decides what to call and when to give up; an [`Effects`] implementation only
//! carries the call out. Futures are local (`!Send`) because the HTTP client of actix is, and an
//! executor runs one flow on one arbiter thread anyway.

use events::spec::{Model, Tool};
use futures_util::future::LocalBoxFuture;
use serde_json::Value;
use uuid::Uuid;

/// The outside world of a run. [`HttpEffects`](super::HttpEffects) is the real one; tests fake it.
pub trait Effects {
    /// The reply of a (non-`echo`) model to `prompt`, with `system` as the system prompt.
    fn model<'a>(
        &'a self,
        model: &'a Model,
        system: &'a str,
        prompt: &'a str,
    ) -> LocalBoxFuture<'a, Result<String, EffectError>>;

    /// One chat completion of a (non-`echo`) model over whole `messages` (OpenAI's shape), with
    /// `tools` offered as function tools (none when empty); not streamed. Model nodes with
    /// `tools` or `history` use it ([`super::agentic`]).
    fn chat<'a>(
        &'a self,
        model: &'a Model,
        messages: &'a [Value],
        tools: &'a [Value],
    ) -> LocalBoxFuture<'a, Result<ChatReply, EffectError>>;

    /// Sends one tool request and returns the tool's answer, whatever its status.
    fn tool<'a>(
        &'a self,
        call: ToolCall<'a>,
    ) -> LocalBoxFuture<'a, Result<ToolResponse, EffectError>>;

    /// Runs the live collaborator `agent` on `input` and returns its output.
    fn agent<'a>(
        &'a self,
        agent: Uuid,
        input: Value,
    ) -> LocalBoxFuture<'a, Result<Value, EffectError>>;

    /// Told of each step of the run as it happens (the run's events). It must not wait: the
    /// default, for effects that record nothing, drops it.
    fn progress(&self, _progress: Progress) {}
}

/// A step of a run, as the interpreter and the model calls report it.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    NodeStarted {
        node: String,
        kind: String,
    },
    NodeFinished {
        node: String,
        output: Value,
    },
    /// A chunk of the reply of the model that the running node called.
    ModelDelta {
        text: String,
    },
    ToolCalled {
        node: String,
        tool: String,
        status: u16,
    },
}

/// What a model answered in a chat: its text, and the tools it asks to call (none: it is done).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatReply {
    pub text: String,
    pub tool_calls: Vec<RequestedCall>,
}

/// One entry of a model's `tool_calls`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RequestedCall {
    /// The model's id for the call, echoed in the `tool` message that answers it.
    pub id: String,
    pub name: String,
    /// The arguments as the model sent them, parsed from their JSON text (a string if they do
    /// not parse).
    pub args: Value,
}

/// One tool request, its templates already rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall<'a> {
    /// The tool as the spec defines it: connection, method, security.
    pub tool: &'a Tool,
    /// The rendered path, appended to the connection's server.
    pub path: String,
    /// The rendered JSON body, if the tool has one.
    pub body: Option<Value>,
}

/// A tool's answer. A non-2xx status is not an effect error: the interpreter decides.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResponse {
    pub status: u16,
    /// The body as JSON if it parses, else as a string; `null` when empty.
    pub body: Value,
}

/// An outside call that failed. The interpreter reports it as the node's failure with this code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct EffectError {
    /// A stable snake_case code, e.g. `missing_member_credentials`, `tool_unreachable`,
    /// `model_failed`, `collaborator_not_live`.
    pub code: String,
    /// What went wrong and how to fix it; never a secret.
    pub message: String,
}

impl EffectError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        EffectError {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The start of an answer's body, for an error message.
pub(super) fn excerpt(body: &Value) -> String {
    const MAX: usize = 200;
    let text = match body {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() <= MAX {
        text
    } else {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    }
}
