//! The tool loop of a model node with `tools` (and the one-call chat of a node with `history`).
//!
//! The model gets the system prompt (`instructions`), the thread's earlier turns when the node
//! has `history`, the rendered prompt, and the node's tools as OpenAI function tools. While it
//! answers with `tool_calls`, each call is carried out as a tool node would (same credentials,
//! egress policy and deadlines), its result sent back as a `tool` message, and the model asked
//! again, up to `max_steps` model calls; an answer without tool calls ends the node with
//! `{text, tool_calls: [{name, args, status}]}`. A failing tool does not fail the node: the model
//! is told the error and decides. A tool with `approval` pauses the run before each call; the
//! loop's whole state is then part of the run's checkpoint, and resumes from there.

use std::sync::Arc;

use events::event::Snapshot;
use events::run::Turn;
use events::spec::{limits, Model, Tool};
use events::validation::KNOWLEDGE_TOOL;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::deadline::{bounded, earliest, Deadline, Limit};
use super::effects::{excerpt, EffectError, Effects, RequestedCall, ToolCall};
use super::indexes::IndexCache;
use super::interpreter::FlowError;
use super::template::{render, render_path};

/// The longest tool result sent back to the model, in characters: a tool may answer up to
/// 16 MiB, which no model's context holds.
const MAX_RESULT_CHARS: usize = 32 * 1024;

/// Passages a knowledge search by the model returns when it does not say.
const DEFAULT_TOP_K: u32 = 3;

/// Where a paused loop stands: everything it needs to go on after a person's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// The conversation with the model so far.
    pub messages: Vec<Value>,
    /// `{name, args, status}` of every call made so far.
    pub calls: Vec<Value>,
    /// Model calls made so far.
    pub steps: u32,
    /// The tool calls of the model's last answer not carried out yet; the first one waits for
    /// approval.
    pub waiting: Vec<RequestedCall>,
}

/// How a loop ended.
pub(super) enum LoopOutcome {
    Done(Value),
    /// A call needs a person's approval: `pending` says which.
    Paused {
        pending: Value,
        state: LoopState,
    },
}

/// What one model node runs with.
pub(super) struct ModelNode<'a> {
    pub snapshot: &'a Arc<Snapshot>,
    pub node: &'a str,
    pub model: &'a Model,
    pub prompt: String,
    pub tools: &'a [String],
    pub max_steps: Option<u32>,
    /// The thread's turns, when the node sends them.
    pub history: Option<&'a [Turn]>,
    /// The flow's context, for rendering tool paths and bodies.
    pub ctx: &'a Value,
    pub node_deadline: Option<Deadline>,
}

impl ModelNode<'_> {
    fn failed(&self, code: &str, message: impl Into<String>) -> FlowError {
        FlowError::Failed {
            node: self.node.to_owned(),
            code: code.to_owned(),
            message: message.into(),
        }
    }

    fn agent_tool(&self, name: &str) -> Option<&Tool> {
        self.snapshot.spec.tools.iter().find(|t| t.name == name)
    }

    fn collaborator(&self, name: &str) -> Option<Uuid> {
        let id = Uuid::parse_str(name).ok()?;
        self.snapshot
            .spec
            .collaborators
            .iter()
            .any(|c| c == name)
            .then_some(id)
    }

    /// The function tools the model is offered, in the node's order.
    fn definitions(&self) -> Result<Vec<Value>, FlowError> {
        self.tools
            .iter()
            .map(|name| {
                let (description, parameters) = if name == KNOWLEDGE_TOOL {
                    (
                        "Searches the agent's knowledge files; returns the best passages."
                            .to_owned(),
                        json!({"type": "object", "properties": {
                            "query": {"type": "string", "description": "What to look for"},
                            "top_k": {"type": "integer", "minimum": 1, "maximum": 50}
                        }, "required": ["query"]}),
                    )
                } else if let Some(tool) = self.agent_tool(name) {
                    (
                        tool.description.clone().unwrap_or_default(),
                        tool.parameters
                            .clone()
                            .unwrap_or_else(|| json!({"type": "object"})),
                    )
                } else if self.collaborator(name).is_some() {
                    (
                        format!("Asks the collaborator agent {name}; the arguments are its input."),
                        json!({"type": "object"}),
                    )
                } else {
                    return Err(self.failed(
                        "unknown_tool",
                        format!("the model may call '{name}', which is no tool, knowledge or collaborator of the agent"),
                    ));
                };
                Ok(json!({"type": "function", "function": {
                    "name": name, "description": description, "parameters": parameters
                }}))
            })
            .collect()
    }

    /// The conversation a fresh loop starts from.
    fn first_messages(&self) -> Vec<Value> {
        let mut messages =
            vec![json!({"role": "system", "content": self.snapshot.spec.instructions})];
        for turn in self.history.unwrap_or_default() {
            let Some(output) = &turn.output else { continue };
            messages.push(json!({"role": "user", "content": said(&turn.input, "message")}));
            messages.push(json!({"role": "assistant", "content": said(output, "text")}));
        }
        messages.push(json!({"role": "user", "content": self.prompt}));
        messages
    }
}

/// What a turn's input or output said, as message text: the value if it is a string, else its
/// `field` if that is one, else compact JSON.
fn said(value: &Value, field: &str) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => match other.get(field).and_then(Value::as_str) {
            Some(s) => s.to_owned(),
            None => other.to_string(),
        },
    }
}

/// Runs the loop from the start, or from `resumed` (a paused state and whether the person
/// approved the call it waits for).
pub(super) async fn run_model(
    node: ModelNode<'_>,
    effects: &dyn Effects,
    resumed: Option<(LoopState, bool)>,
) -> Result<LoopOutcome, FlowError> {
    let definitions = node.definitions()?;
    let max_steps = node.max_steps.unwrap_or(limits::DEFAULT_MAX_STEPS);
    let (mut state, mut decision) = match resumed {
        Some((state, approved)) => (state, Some(approved)),
        None => (
            LoopState {
                messages: node.first_messages(),
                calls: Vec::new(),
                steps: 0,
                waiting: Vec::new(),
            },
            None,
        ),
    };
    loop {
        // The calls of the model's last answer, one by one.
        while !state.waiting.is_empty() {
            let call = state.waiting[0].clone();
            let approval = node.agent_tool(&call.name).is_some_and(|t| t.approval);
            let result = match (approval, decision.take()) {
                (true, None) => {
                    let pending = json!({"kind": "approval", "node": node.node,
                                         "tool": call.name, "args": call.args});
                    return Ok(LoopOutcome::Paused { pending, state });
                }
                (true, Some(false)) => Err(EffectError::new(
                    "tool_not_approved",
                    format!("a person refused the call of '{}'", call.name),
                )),
                _ => execute(&node, effects, &call).await,
            };
            let (status, content) = match result {
                Ok(value) => ("ok", value),
                Err(e) => {
                    let status = if e.code == "tool_not_approved" {
                        "not_approved"
                    } else {
                        "failed"
                    };
                    (
                        status,
                        json!({"error": {"code": e.code, "message": e.message}}),
                    )
                }
            };
            state
                .calls
                .push(json!({"name": call.name, "args": call.args, "status": status}));
            state.messages.push(json!({
                "role": "tool", "tool_call_id": call.id, "content": capped(&content)
            }));
            state.waiting.remove(0);
        }
        if state.steps >= max_steps {
            return Err(node.failed(
                "max_steps_exceeded",
                format!(
                    "the model still called tools after {max_steps} model calls (max_steps): \
                     raise max_steps (up to {}) or make the task smaller",
                    limits::MAX_STEPS.end()
                ),
            ));
        }
        state.steps += 1;
        let model_deadline = Deadline::starting_now_s(Limit::Model, node.model.timeout_s);
        let reply = bounded(
            earliest(node.node_deadline, model_deadline),
            effects.chat(node.model, &state.messages, &definitions),
        )
        .await
        .map_err(|limit| FlowError::Timeout {
            limit,
            node: node.node.to_owned(),
        })?
        .map_err(|e| FlowError::Failed {
            node: node.node.to_owned(),
            code: e.code,
            message: e.message,
        })?;
        if reply.tool_calls.is_empty() {
            return Ok(LoopOutcome::Done(
                json!({"text": reply.text, "tool_calls": state.calls}),
            ));
        }
        state.messages.push(json!({
            "role": "assistant",
            "content": if reply.text.is_empty() { Value::Null } else { Value::String(reply.text) },
            "tool_calls": reply.tool_calls.iter().map(|c| json!({
                "id": c.id, "type": "function",
                "function": {"name": c.name, "arguments": c.args.to_string()}
            })).collect::<Vec<_>>(),
        }));
        state.waiting = reply.tool_calls;
    }
}

/// A tool result as the `tool` message's content: compact JSON, cut at [`MAX_RESULT_CHARS`].
fn capped(content: &Value) -> String {
    let text = content.to_string();
    if text.chars().count() <= MAX_RESULT_CHARS {
        text
    } else {
        let cut: String = text.chars().take(MAX_RESULT_CHARS).collect();
        format!("{cut}… (truncated)")
    }
}

/// Carries out one call the model asked for; its result for the model.
async fn execute(
    node: &ModelNode<'_>,
    effects: &dyn Effects,
    call: &RequestedCall,
) -> Result<Value, EffectError> {
    if !node.tools.contains(&call.name) {
        return Err(EffectError::new(
            "unknown_tool",
            format!(
                "'{}' is not one of the tools offered: call one of {}",
                call.name,
                node.tools.join(", ")
            ),
        ));
    }
    if call.name == KNOWLEDGE_TOOL {
        let query = call
            .args
            .get("query")
            .and_then(Value::as_str)
            .ok_or_else(|| EffectError::new("invalid_args", "knowledge needs a string `query`"))?;
        let top_k = call
            .args
            .get("top_k")
            .and_then(Value::as_u64)
            .map_or(DEFAULT_TOP_K, |k| {
                k.clamp(1, *limits::TOP_K.end() as u64) as u32
            });
        let passages: Vec<Value> = IndexCache::shared()
            .index(node.snapshot)
            .search(query, top_k as usize)
            .into_iter()
            .map(|p| json!({"source": p.source, "text": p.text, "score": p.score}))
            .collect();
        return Ok(json!({ "passages": passages }));
    }
    if let Some(tool) = node.agent_tool(&call.name) {
        let mut tool_ctx = node.ctx.clone();
        tool_ctx["args"] = call.args.clone();
        let template = |e: super::TemplateError| EffectError::new(e.code(), e.to_string());
        let path = render_path(&tool.path, &tool_ctx).map_err(template)?;
        let body = tool
            .body
            .as_ref()
            .map(|body| render(body, &tool_ctx))
            .transpose()
            .map_err(template)?;
        let response = effects.tool(ToolCall { tool, path, body }).await?;
        if !(200..300).contains(&response.status) {
            return Err(EffectError::new(
                "tool_failed",
                format!(
                    "tool '{}' answered HTTP {}: {}",
                    call.name,
                    response.status,
                    excerpt(&response.body)
                ),
            ));
        }
        return Ok(json!({"status": response.status, "body": response.body}));
    }
    if let Some(agent) = node.collaborator(&call.name) {
        return effects.agent(agent, call.args.clone()).await;
    }
    Err(EffectError::new(
        "unknown_tool",
        format!("'{}' is no tool of the agent", call.name),
    ))
}
