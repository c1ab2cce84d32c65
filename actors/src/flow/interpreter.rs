//! Runs the flow of a version's snapshot (or a draft's) on one input: walks the nodes from `flow.start`, keeps each
//! node's output in the context `{input, nodes: {ID: output}}`, and returns the `end` node's
//! rendered output.
//!
//! The spec may be a draft that was never validated (preview runs those), so nothing is assumed:
//! a missing node, a node without `next` or a cycle is a `flow_error`, never a panic or a hang.
//! The run is cancelled by dropping its future.

use std::sync::Arc;
use std::time::Duration;

use events::event::Snapshot;
use events::run::Turn;
use events::spec::{AgentSpec, Node, NodeKind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::agentic::{run_model, LoopOutcome, LoopState, ModelNode};
use super::deadline::{bounded, earliest, Deadline, Limit};
use super::effects::{excerpt, EffectError, Effects, Progress, ToolCall};
use super::indexes::IndexCache;
use super::template::{eval_condition, render, render_path, render_str, TemplateError};

/// Why a run did not produce an output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// A node could not do its work: bad template, failed effect, malformed flow.
    #[error("node '{node}' failed ({code}): {message}")]
    Failed {
        /// The node that failed; empty when the flow itself is missing.
        node: String,
        code: String,
        message: String,
    },
    /// A time limit ran out while `node` was running.
    #[error("the {limit} time limit ran out at node '{node}'")]
    Timeout { limit: Limit, node: String },
}

impl FlowError {
    fn failed(node: &str, code: &str, message: impl Into<String>) -> Self {
        FlowError::Failed {
            node: node.to_owned(),
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// The stable code: the failure's own, or `timeout`.
    pub fn code(&self) -> &str {
        match self {
            FlowError::Failed { code, .. } => code,
            FlowError::Timeout { .. } => "timeout",
        }
    }

    /// The node the run stopped at.
    pub fn node(&self) -> &str {
        match self {
            FlowError::Failed { node, .. } | FlowError::Timeout { node, .. } => node,
        }
    }
}

/// What a node leads to.
enum Step {
    Next {
        output: Value,
        next: String,
    },
    End(Value),
    /// The run waits for a person: `pending` says for what; `model` is a paused tool loop.
    Pause {
        pending: Value,
        model: Option<LoopState>,
    },
}

/// What a run starts from.
#[derive(Debug, Clone, Default)]
pub struct Start {
    pub input: Value,
    /// The thread the run belongs to, with its last turns (`thread.turns` in templates).
    pub thread: Option<Thread>,
    /// For a paused run going on: where it stopped and the person's answer.
    pub resume: Option<Resume>,
}

#[derive(Debug, Clone, Default)]
pub struct Thread {
    pub id: String,
    pub turns: Vec<Turn>,
}

/// Where a paused run resumes: the node it stopped at, the outputs of the nodes before it, and
/// a paused tool loop's state. Stored with the run (`StoredRun::checkpoint`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub node: String,
    pub nodes: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<LoopState>,
}

/// A person's answer to a paused run.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// To `pending.kind == "approval"`: whether the call may go ahead.
    Approve(bool),
    /// To `pending.kind == "input"`: the input node's output.
    Input(Value),
}

#[derive(Debug, Clone)]
pub struct Resume {
    pub checkpoint: Checkpoint,
    pub answer: Answer,
}

/// How a flow stopped without failing.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The `end` node's output.
    Done(Value),
    /// Waiting for a person: what is asked, and where to go on from.
    Paused {
        pending: Value,
        checkpoint: Checkpoint,
    },
}

/// Runs the flow of `snapshot`'s spec on `input`, to its end; a pause is a failure here
/// (`input_required`). See [`run_from`].
pub async fn run(
    snapshot: &Arc<Snapshot>,
    input: &Value,
    effects: &dyn Effects,
    agent_limit: Option<Duration>,
) -> Result<Value, FlowError> {
    let start = Start {
        input: input.clone(),
        ..Start::default()
    };
    match run_from(snapshot, start, effects, agent_limit).await? {
        Outcome::Done(output) => Ok(output),
        Outcome::Paused { checkpoint, .. } => Err(FlowError::failed(
            &checkpoint.node,
            "input_required",
            "the flow paused for a person's input",
        )),
    }
}

/// Runs the flow of `snapshot`'s spec from `start` (its beginning, or where a paused run
/// stopped), bounded as a whole by `agent_limit` (the endpoint's timeout). The snapshot, not
/// only its spec, so that its knowledge index is built once for all its runs.
pub async fn run_from(
    snapshot: &Arc<Snapshot>,
    start: Start,
    effects: &dyn Effects,
    agent_limit: Option<Duration>,
) -> Result<Outcome, FlowError> {
    let agent_deadline = Deadline::starting_now(Limit::Agent, agent_limit);
    let spec = &snapshot.spec;
    let flow = spec.flow.as_ref().ok_or_else(|| {
        FlowError::failed(
            "",
            "flow_error",
            "the agent has no flow: add one with a start node",
        )
    })?;
    let Start {
        input,
        thread,
        mut resume,
    } = start;
    let (first, mut nodes) = match &mut resume {
        Some(r) => (
            r.checkpoint.node.clone(),
            std::mem::take(&mut r.checkpoint.nodes),
        ),
        None => (flow.start.clone(), Map::new()),
    };
    let mut current = flow.node(&first).ok_or_else(|| {
        FlowError::failed(
            &first,
            "flow_error",
            format!("the node '{first}' to start from does not exist"),
        )
    })?;
    let turns = thread.as_ref().map(|t| t.turns.as_slice());
    let thread_ctx = match &thread {
        Some(t) => json!({"id": t.id, "turns": t.turns}),
        None => json!({"id": null, "turns": []}),
    };
    // A flow that passed validation visits each node at most once.
    let max_steps = flow.nodes.len() + 1;
    for _ in 0..max_steps {
        let node_deadline = earliest(
            agent_deadline,
            Deadline::starting_now_s(Limit::Node, current.timeout_s),
        );
        let ctx = json!({"input": input, "nodes": nodes, "thread": thread_ctx});
        tracing::debug!(node = %current.id, kind = current.kind.type_name(), "flow step");
        effects.progress(Progress::NodeStarted {
            node: current.id.clone(),
            kind: current.kind.type_name().to_owned(),
        });
        let node_run = NodeRun {
            snapshot,
            node: current,
            ctx: &ctx,
            node_deadline,
            turns,
            resume: resume.take(),
        };
        let step = bounded(node_deadline, run_node(node_run, effects))
            .await
            .map_err(|limit| FlowError::Timeout {
                limit,
                node: current.id.clone(),
            })??;
        match step {
            Step::End(output) => {
                effects.progress(Progress::NodeFinished {
                    node: current.id.clone(),
                    output: output.clone(),
                });
                return Ok(Outcome::Done(output));
            }
            Step::Pause { pending, model } => {
                return Ok(Outcome::Paused {
                    pending,
                    checkpoint: Checkpoint {
                        node: current.id.clone(),
                        nodes,
                        model,
                    },
                })
            }
            Step::Next { output, next } => {
                effects.progress(Progress::NodeFinished {
                    node: current.id.clone(),
                    output: output.clone(),
                });
                nodes.insert(current.id.clone(), output);
                current = flow.node(&next).ok_or_else(|| {
                    FlowError::failed(
                        &current.id,
                        "flow_error",
                        format!("next node '{next}' does not exist"),
                    )
                })?;
            }
        }
    }
    Err(FlowError::failed(
        &current.id,
        "flow_error",
        format!("the flow ran {max_steps} steps without reaching an end node: it has a cycle"),
    ))
}

/// One node to run, and what it runs with.
struct NodeRun<'a> {
    snapshot: &'a Arc<Snapshot>,
    node: &'a Node,
    ctx: &'a Value,
    node_deadline: Option<Deadline>,
    /// The thread's turns, for a model node with `history`.
    turns: Option<&'a [Turn]>,
    /// When the run paused at this node: the person's answer.
    resume: Option<Resume>,
}

async fn run_node(run: NodeRun<'_>, effects: &dyn Effects) -> Result<Step, FlowError> {
    let NodeRun {
        snapshot,
        node,
        ctx,
        node_deadline,
        turns,
        resume,
    } = run;
    let spec: &AgentSpec = &snapshot.spec;
    let id = node.id.as_str();
    let template = |e: TemplateError| FlowError::failed(id, e.code(), e.to_string());
    let effect = |e: EffectError| FlowError::Failed {
        node: id.to_owned(),
        code: e.code,
        message: e.message,
    };
    let output = match &node.kind {
        NodeKind::Transform { output } => render(output, ctx).map_err(template)?,
        NodeKind::Model {
            prompt,
            tools,
            max_steps,
            history,
        } => {
            let prompt = render_str(prompt, ctx).map_err(template)?;
            let model = spec.model.as_ref().ok_or_else(|| {
                FlowError::failed(
                    id,
                    "unsupported_model",
                    "the agent has no model: set model.provider to \"echo\" or \"openai\"",
                )
            })?;
            if model.provider == "openai" && (!tools.is_empty() || *history) {
                let resumed = match resume {
                    Some(Resume {
                        checkpoint:
                            Checkpoint {
                                model: Some(state), ..
                            },
                        answer: Answer::Approve(approved),
                    }) => Some((state, approved)),
                    Some(_) => {
                        return Err(FlowError::failed(
                            id,
                            "invalid_resume",
                            "the run paused here for another kind of answer",
                        ))
                    }
                    None => None,
                };
                let model_node = ModelNode {
                    snapshot,
                    node: id,
                    model,
                    prompt,
                    tools,
                    max_steps: *max_steps,
                    history: if *history { turns } else { None },
                    ctx,
                    node_deadline,
                };
                return match run_model(model_node, effects, resumed).await? {
                    LoopOutcome::Paused { pending, state } => Ok(Step::Pause {
                        pending,
                        model: Some(state),
                    }),
                    LoopOutcome::Done(output) => Ok(Step::Next {
                        output,
                        next: next_of(node)?,
                    }),
                };
            }
            let reply = match model.provider.as_str() {
                "echo" if !tools.is_empty() => {
                    // The echo model calls no tools; the output keeps the shape of a tool loop's.
                    return Ok(Step::Next {
                        output: json!({"text": prompt, "tool_calls": []}),
                        next: next_of(node)?,
                    });
                }
                "echo" => {
                    for text in echo_chunks(&prompt) {
                        effects.progress(Progress::ModelDelta { text });
                    }
                    prompt
                }
                "openai" => {
                    let model_deadline = Deadline::starting_now_s(Limit::Model, model.timeout_s);
                    let call = effects.model(model, &spec.instructions, &prompt);
                    bounded(earliest(node_deadline, model_deadline), call)
                        .await
                        .map_err(|limit| FlowError::Timeout {
                            limit,
                            node: id.to_owned(),
                        })?
                        .map_err(effect)?
                }
                other => {
                    return Err(FlowError::failed(
                        id,
                        "unsupported_model",
                        format!(
                            "model provider '{other}' is not supported: use \"echo\" or \"openai\""
                        ),
                    ))
                }
            };
            json!({ "text": reply })
        }
        NodeKind::Tool { tool, args } => {
            let spec_tool = spec.tools.iter().find(|t| t.name == *tool).ok_or_else(|| {
                FlowError::failed(
                    id,
                    "unknown_tool",
                    format!("the agent has no tool '{tool}'"),
                )
            })?;
            let mut tool_ctx = ctx.clone();
            let args = render(args, ctx).map_err(template)?;
            if spec_tool.approval {
                match resume.map(|r| r.answer) {
                    None => {
                        return Ok(Step::Pause {
                            pending: json!({"kind": "approval", "node": id, "tool": tool, "args": args}),
                            model: None,
                        })
                    }
                    Some(Answer::Approve(true)) => {}
                    Some(Answer::Approve(false)) => {
                        return Err(FlowError::failed(
                            id,
                            "tool_not_approved",
                            format!("a person refused the call of tool '{tool}'"),
                        ))
                    }
                    Some(Answer::Input(_)) => {
                        return Err(FlowError::failed(
                            id,
                            "invalid_resume",
                            "the run paused here for an approval, not an input",
                        ))
                    }
                }
            }
            tool_ctx["args"] = args;
            let path = render_path(&spec_tool.path, &tool_ctx).map_err(template)?;
            let body = spec_tool
                .body
                .as_ref()
                .map(|body| render(body, &tool_ctx))
                .transpose()
                .map_err(template)?;
            let call = ToolCall {
                tool: spec_tool,
                path,
                body,
            };
            let response = effects.tool(call).await.map_err(effect)?;
            effects.progress(Progress::ToolCalled {
                node: id.to_owned(),
                tool: tool.clone(),
                status: response.status,
            });
            if !(200..300).contains(&response.status) {
                return Err(FlowError::failed(
                    id,
                    "tool_failed",
                    format!(
                        "tool '{tool}' answered HTTP {}: {}",
                        response.status,
                        excerpt(&response.body)
                    ),
                ));
            }
            json!({"status": response.status, "body": response.body})
        }
        NodeKind::Knowledge { query, top_k } => {
            let query = render_str(query, ctx).map_err(template)?;
            let passages: Vec<Value> = IndexCache::shared()
                .index(snapshot)
                .search(&query, *top_k as usize)
                .into_iter()
                .map(|p| json!({"source": p.source, "text": p.text, "score": p.score}))
                .collect();
            json!({ "passages": passages })
        }
        NodeKind::Condition {
            branches,
            otherwise,
        } => {
            let mut chosen = None;
            for branch in branches {
                if eval_condition(&branch.when, ctx).map_err(template)? {
                    chosen = Some(branch.next.clone());
                    break;
                }
            }
            let next = chosen.or_else(|| otherwise.clone()).ok_or_else(|| {
                FlowError::failed(
                    id,
                    "no_branch",
                    "no branch's condition held and the node has no else",
                )
            })?;
            // A condition's own choice is its next; its output records it for later templates.
            return Ok(Step::Next {
                output: json!({ "next": next }),
                next,
            });
        }
        NodeKind::Agent { agent, input } => {
            let agent_id = Uuid::parse_str(agent)
                .ok()
                .filter(|_| spec.collaborators.iter().any(|c| c == agent))
                .ok_or_else(|| {
                    FlowError::failed(
                        id,
                        "unknown_collaborator",
                        format!("'{agent}' is not an agent id listed in collaborators"),
                    )
                })?;
            let input = render(input, ctx).map_err(template)?;
            effects.agent(agent_id, input).await.map_err(effect)?
        }
        NodeKind::End { output } => return Ok(Step::End(render(output, ctx).map_err(template)?)),
        NodeKind::Input { prompt } => match resume.map(|r| r.answer) {
            None => {
                let prompt = render_str(prompt, ctx).map_err(template)?;
                return Ok(Step::Pause {
                    pending: json!({"kind": "input", "node": id, "prompt": prompt}),
                    model: None,
                });
            }
            Some(Answer::Input(value)) => value,
            Some(Answer::Approve(_)) => {
                return Err(FlowError::failed(
                    id,
                    "invalid_resume",
                    "the run paused here for an input, not an approval",
                ))
            }
        },
    };
    Ok(Step::Next {
        output,
        next: next_of(node)?,
    })
}

fn next_of(node: &Node) -> Result<String, FlowError> {
    node.next.clone().ok_or_else(|| {
        FlowError::failed(
            &node.id,
            "flow_error",
            "the node has no next: point it at another node or end the flow with an end node",
        )
    })
}

/// The `echo` model's reply as a few `model.delta` chunks (at most four, split at whitespace
/// where it can be), so a client of the event stream sees it arrive in parts as from a real
/// model. The chunks joined are the reply.
fn echo_chunks(reply: &str) -> Vec<String> {
    const CHUNKS: usize = 4;
    let target = reply.len().div_ceil(CHUNKS).max(1);
    let mut chunks = Vec::new();
    let mut current = String::new();
    for piece in reply.split_inclusive(char::is_whitespace) {
        current.push_str(piece);
        if current.len() >= target && chunks.len() < CHUNKS - 1 {
            chunks.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use events::spec::Model;
    use futures_util::future::LocalBoxFuture;
    use futures_util::FutureExt;

    use super::super::effects::{ChatReply, RequestedCall, ToolResponse};
    use super::*;

    const FRIEND: &str = "0190f0c0-0000-7000-8000-000000000001";

    /// Effects that answer from fixed settings and record what they were asked.
    #[derive(Default)]
    struct Fake {
        model_delay_s: u64,
        tool_status: u16,
        tool_error: Option<EffectError>,
        calls: RefCell<Vec<Value>>,
        progress: RefCell<Vec<Progress>>,
        /// What the chat model answers, in turn; then plain text.
        chat_replies: RefCell<std::collections::VecDeque<ChatReply>>,
        /// The messages of every chat call.
        chats: RefCell<Vec<Vec<Value>>>,
    }

    impl Fake {
        fn scripted(replies: Vec<ChatReply>) -> Fake {
            Fake {
                tool_status: 200,
                chat_replies: RefCell::new(replies.into()),
                ..Fake::default()
            }
        }
    }

    fn calls(calls: &[(&str, Value)]) -> ChatReply {
        ChatReply {
            text: String::new(),
            tool_calls: calls
                .iter()
                .enumerate()
                .map(|(i, (name, args))| RequestedCall {
                    id: format!("c{i}"),
                    name: (*name).into(),
                    args: args.clone(),
                })
                .collect(),
        }
    }

    fn says(text: &str) -> ChatReply {
        ChatReply {
            text: text.into(),
            tool_calls: vec![],
        }
    }

    impl Effects for Fake {
        fn chat<'a>(
            &'a self,
            _model: &'a Model,
            messages: &'a [Value],
            _tools: &'a [Value],
        ) -> LocalBoxFuture<'a, Result<ChatReply, EffectError>> {
            self.chats.borrow_mut().push(messages.to_vec());
            let reply = self
                .chat_replies
                .borrow_mut()
                .pop_front()
                .unwrap_or_else(|| says("done"));
            async move {
                tokio::time::sleep(Duration::from_secs(self.model_delay_s)).await;
                Ok(reply)
            }
            .boxed_local()
        }

        fn model<'a>(
            &'a self,
            model: &'a Model,
            system: &'a str,
            prompt: &'a str,
        ) -> LocalBoxFuture<'a, Result<String, EffectError>> {
            async move {
                tokio::time::sleep(Duration::from_secs(self.model_delay_s)).await;
                Ok(format!("{}|{system}|{prompt}", model.name))
            }
            .boxed_local()
        }

        fn tool<'a>(
            &'a self,
            call: ToolCall<'a>,
        ) -> LocalBoxFuture<'a, Result<ToolResponse, EffectError>> {
            self.calls
                .borrow_mut()
                .push(json!({"tool": call.tool.name, "path": call.path, "body": call.body}));
            let answer = match &self.tool_error {
                Some(e) => Err(e.clone()),
                None => Ok(ToolResponse {
                    status: self.tool_status,
                    body: json!({"temp": 21}),
                }),
            };
            async move { answer }.boxed_local()
        }

        fn agent<'a>(
            &'a self,
            agent: Uuid,
            input: Value,
        ) -> LocalBoxFuture<'a, Result<Value, EffectError>> {
            async move { Ok(json!({"from": agent.to_string(), "got": input})) }.boxed_local()
        }

        fn progress(&self, progress: Progress) {
            self.progress.borrow_mut().push(progress);
        }
    }

    fn spec(provider: &str, model_timeout: Option<u64>, nodes: Value) -> AgentSpec {
        serde_json::from_value(json!({
            "name": "t", "instructions": "Be brief.",
            "model": {"provider": provider, "name": "m1", "timeout_s": model_timeout},
            "knowledge": [{"name": "faq.md", "content": "Refunds take 14 days.\n\nWe open at 9."}],
            "tools": [{"name": "forecast", "connection": "weather", "security": "api_key",
                       "method": "POST", "path": "/forecast?city={{ args.city }}",
                       "body": {"days": "{{ args.days }}"}}],
            "collaborators": [FRIEND],
            "flow": {"start": "a", "nodes": nodes}
        }))
        .expect("spec parses")
    }

    /// A flow of node `a` (whatever is given) followed by an end that returns `a`'s output.
    fn one_node(provider: &str, node: Value) -> AgentSpec {
        let mut node = node;
        node["id"] = json!("a");
        node["next"] = json!("done");
        spec(
            provider,
            None,
            json!([node, {"id": "done", "type": "end", "output": "{{ nodes.a }}"}]),
        )
    }

    fn snapshot(spec: &AgentSpec) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            spec: spec.clone(),
            endpoint: Default::default(),
            connections: vec![],
        })
    }

    async fn go(spec: &AgentSpec, input: Value, fake: &Fake) -> Result<Value, FlowError> {
        run(&snapshot(spec), &input, fake, None).await
    }

    fn failed_code(result: Result<Value, FlowError>) -> (String, String) {
        match result {
            Err(FlowError::Failed { node, code, .. }) => (node, code),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn transform_and_end_render_the_context() {
        let spec = spec(
            "echo",
            None,
            json!([
                {"id": "a", "type": "transform", "output": {"text": "Hello {{ input.name }}", "n": "{{ input.n }}"}, "next": "done"},
                {"id": "done", "type": "end", "output": {"greeting": "{{ nodes.a.text }}", "n": "{{ nodes.a.n }}"}}
            ]),
        );
        let out = go(&spec, json!({"name": "Ada", "n": 2}), &Fake::default()).await;
        assert_eq!(out.unwrap(), json!({"greeting": "Hello Ada", "n": 2}));
    }

    #[tokio::test]
    async fn model_nodes_echo_call_openai_or_refuse() {
        let node = json!({"type": "model", "prompt": "Q: {{ input.q }}"});
        let input = json!({"q": "why"});
        let out = go(
            &one_node("echo", node.clone()),
            input.clone(),
            &Fake::default(),
        )
        .await;
        assert_eq!(out.unwrap(), json!({"text": "Q: why"}));
        let out = go(
            &one_node("openai", node.clone()),
            input.clone(),
            &Fake::default(),
        )
        .await;
        assert_eq!(out.unwrap(), json!({"text": "m1|Be brief.|Q: why"}));
        let out = go(&one_node("llama", node), input, &Fake::default()).await;
        assert_eq!(failed_code(out), ("a".into(), "unsupported_model".into()));
    }

    #[tokio::test]
    async fn tool_node_renders_args_path_and_body() {
        let fake = Fake {
            tool_status: 200,
            ..Fake::default()
        };
        let node = json!({"type": "tool", "tool": "forecast", "args": {"city": "{{ input.city }}", "days": "{{ input.days }}"}});
        let out = go(
            &one_node("echo", node),
            json!({"city": "Oslo", "days": 3}),
            &fake,
        )
        .await;
        assert_eq!(out.unwrap(), json!({"status": 200, "body": {"temp": 21}}));
        assert_eq!(
            fake.calls.borrow()[0],
            json!({"tool": "forecast", "path": "/forecast?city=Oslo", "body": {"days": 3}})
        );
    }

    #[tokio::test]
    async fn tool_non_2xx_fails_and_effect_errors_keep_their_code() {
        let node = json!({"type": "tool", "tool": "forecast", "args": {"city": "x"}});
        let fake = Fake {
            tool_status: 503,
            ..Fake::default()
        };
        match go(&one_node("echo", node.clone()), json!({}), &fake).await {
            Err(FlowError::Failed { code, message, .. }) => {
                assert_eq!(code, "tool_failed");
                assert!(message.contains("503"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let fake = Fake {
            tool_error: Some(EffectError::new("missing_member_credentials", "no creds")),
            ..Fake::default()
        };
        let out = go(&one_node("echo", node), json!({}), &fake).await;
        assert_eq!(
            failed_code(out),
            ("a".into(), "missing_member_credentials".into())
        );
        let unknown = json!({"type": "tool", "tool": "nope"});
        let out = go(&one_node("echo", unknown), json!({}), &Fake::default()).await;
        assert_eq!(failed_code(out).1, "unknown_tool");
    }

    #[tokio::test]
    async fn knowledge_node_ranks_passages() {
        let node = json!({"type": "knowledge", "query": "{{ input.q }}", "top_k": 1});
        let out = go(
            &one_node("echo", node),
            json!({"q": "refunds"}),
            &Fake::default(),
        )
        .await;
        let out = out.unwrap();
        assert_eq!(out["passages"].as_array().map(Vec::len), Some(1));
        assert_eq!(out["passages"][0]["source"], "faq.md");
        assert_eq!(out["passages"][0]["text"], "Refunds take 14 days.");
        assert!(out["passages"][0]["score"].as_f64().unwrap() > 0.0);
    }

    /// Guards against re-indexing the knowledge on every call: a run's knowledge node uses the
    /// index of its snapshot, built by the first run and found by the next.
    #[tokio::test]
    async fn runs_of_one_snapshot_share_its_knowledge_index() {
        let node = json!({"type": "knowledge", "query": "{{ input.q }}", "top_k": 1});
        let version = snapshot(&one_node("echo", node));
        let cache = IndexCache::shared();
        assert!(!cache.holds(&version));
        let first = run(&version, &json!({"q": "refunds"}), &Fake::default(), None).await;
        assert!(cache.holds(&version), "the run indexed its snapshot");
        let index = cache.index(&version);
        let second = run(&version, &json!({"q": "refunds"}), &Fake::default(), None).await;
        assert_eq!(first, second);
        assert!(Arc::ptr_eq(&index, &cache.index(&version)), "not rebuilt");
    }

    #[tokio::test]
    async fn condition_takes_the_first_true_branch_then_else() {
        let spec = spec(
            "echo",
            None,
            json!([
                {"id": "a", "type": "condition", "branches": [
                    {"when": "input.x > 10", "next": "big"},
                    {"when": "input.x > 1 and input.tag == 'a'", "next": "mid"}], "else": "small"},
                {"id": "big", "type": "end", "output": "big"},
                {"id": "mid", "type": "end", "output": "mid {{ nodes.a.next }}"},
                {"id": "small", "type": "end", "output": "small"}
            ]),
        );
        let fake = Fake::default();
        assert_eq!(
            go(&spec, json!({"x": 50}), &fake).await.unwrap(),
            json!("big")
        );
        let out = go(&spec, json!({"x": 5, "tag": "a"}), &fake).await.unwrap();
        assert_eq!(out, json!("mid mid"));
        assert_eq!(
            go(&spec, json!({"x": 0}), &fake).await.unwrap(),
            json!("small")
        );
        let mut no_else = spec.clone();
        if let Some(flow) = no_else.flow.as_mut() {
            if let NodeKind::Condition { otherwise, .. } = &mut flow.nodes[0].kind {
                *otherwise = None;
            }
        }
        let out = go(&no_else, json!({"x": 0}), &fake).await;
        assert_eq!(failed_code(out), ("a".into(), "no_branch".into()));
    }

    #[tokio::test]
    async fn agent_node_calls_a_listed_collaborator() {
        let node = json!({"type": "agent", "agent": FRIEND, "input": {"q": "{{ input.q }}"}});
        let out = go(&one_node("echo", node), json!({"q": 1}), &Fake::default()).await;
        assert_eq!(out.unwrap(), json!({"from": FRIEND, "got": {"q": 1}}));
        let stranger = json!({"type": "agent", "agent": Uuid::nil().to_string()});
        let out = go(&one_node("echo", stranger), json!({}), &Fake::default()).await;
        assert_eq!(failed_code(out).1, "unknown_collaborator");
    }

    #[tokio::test]
    async fn malformed_flows_fail_without_hanging() {
        let fake = Fake::default();
        let cycle = spec(
            "echo",
            None,
            json!([{"id": "a", "type": "transform", "output": 1, "next": "b"},
                   {"id": "b", "type": "transform", "output": 2, "next": "a"}]),
        );
        assert_eq!(
            failed_code(go(&cycle, json!({}), &fake).await).1,
            "flow_error"
        );
        let dangling = spec(
            "echo",
            None,
            json!([{"id": "a", "type": "transform", "output": 1, "next": "zz"}]),
        );
        let out = go(&dangling, json!({}), &fake).await;
        assert_eq!(failed_code(out), ("a".into(), "flow_error".into()));
        let bad_template = one_node("echo", json!({"type": "transform", "output": "{{ 1 + }}"}));
        let out = go(&bad_template, json!({}), &fake).await;
        assert_eq!(failed_code(out), ("a".into(), "template_error".into()));
        let no_flow = AgentSpec::default();
        assert_eq!(
            failed_code(go(&no_flow, json!({}), &fake).await).1,
            "flow_error"
        );
    }

    /// A model node whose model takes 10 s, under the given limits.
    async fn slow_model(
        agent: u64,
        node: Option<u64>,
        model: Option<u64>,
    ) -> Result<Value, FlowError> {
        let mut spec = spec(
            "openai",
            model,
            json!([{"id": "a", "type": "model", "prompt": "p", "next": "done"},
                   {"id": "done", "type": "end"}]),
        );
        if let Some(flow) = spec.flow.as_mut() {
            flow.nodes[0].timeout_s = node;
        }
        let fake = Fake {
            model_delay_s: 10,
            ..Fake::default()
        };
        let limit = Some(Duration::from_secs(agent));
        run(&snapshot(&spec), &json!({}), &fake, limit).await
    }

    fn timeout(limit: Limit) -> Result<Value, FlowError> {
        Err(FlowError::Timeout {
            limit,
            node: "a".into(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_limit_fires_and_is_named() {
        let start = tokio::time::Instant::now();
        assert_eq!(slow_model(8, Some(5), Some(2)).await, timeout(Limit::Model));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(slow_model(8, Some(1), Some(2)).await, timeout(Limit::Node));
        assert_eq!(slow_model(1, Some(5), Some(2)).await, timeout(Limit::Agent));
        // An inner limit never extends an outer one.
        let start = tokio::time::Instant::now();
        assert_eq!(slow_model(1, Some(100), None).await, timeout(Limit::Agent));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(slow_model(3, Some(3), Some(3)).await, timeout(Limit::Agent));
        assert_eq!(slow_model(9, Some(4), Some(4)).await, timeout(Limit::Node));
        assert_eq!(timeout(Limit::Node).unwrap_err().code(), "timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn generous_limits_let_the_model_finish() {
        let start = tokio::time::Instant::now();
        assert_eq!(slow_model(60, Some(30), Some(20)).await, Ok(Value::Null));
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    /// What a run's event stream is made of: each node started and finished in order, the echo
    /// reply in pieces that join to it, the tool's answer.
    #[tokio::test]
    async fn steps_are_reported_in_order() {
        let fake = Fake {
            tool_status: 200,
            ..Fake::default()
        };
        let spec = spec(
            "echo",
            None,
            json!([
                {"id": "a", "type": "model", "prompt": "one two three four five", "next": "t"},
                {"id": "t", "type": "tool", "tool": "forecast", "args": {"city": "Oslo", "days": 1}, "next": "done"},
                {"id": "done", "type": "end", "output": "{{ nodes.a.text }}"}
            ]),
        );
        let out = go(&spec, json!({}), &fake).await.expect("runs");
        assert_eq!(out, json!("one two three four five"));
        let steps = fake.progress.borrow().clone();
        let started = |node: &str, kind: &str| Progress::NodeStarted {
            node: node.into(),
            kind: kind.into(),
        };
        assert_eq!(steps[0], started("a", "model"));
        let pieces: Vec<String> = steps
            .iter()
            .filter_map(|p| match p {
                Progress::ModelDelta { text } => Some(text.clone()),
                _ => None,
            })
            .collect();
        assert!(pieces.len() > 1 && pieces.len() <= 4, "{pieces:?}");
        assert_eq!(pieces.concat(), "one two three four five");
        let rest: Vec<&Progress> = steps
            .iter()
            .filter(|p| !matches!(p, Progress::ModelDelta { .. }))
            .collect();
        assert_eq!(
            rest,
            [
                &started("a", "model"),
                &Progress::NodeFinished {
                    node: "a".into(),
                    output: json!({"text": "one two three four five"})
                },
                &started("t", "tool"),
                &Progress::ToolCalled {
                    node: "t".into(),
                    tool: "forecast".into(),
                    status: 200
                },
                &Progress::NodeFinished {
                    node: "t".into(),
                    output: json!({"status": 200, "body": {"temp": 21}})
                },
                &started("done", "end"),
                &Progress::NodeFinished {
                    node: "done".into(),
                    output: json!("one two three four five")
                },
            ]
        );
    }

    #[test]
    fn echo_chunks_join_to_the_reply() {
        for reply in [
            "",
            "x",
            "no-spaces-at-all-here",
            "a b c d e f g h i j k",
            "  lead",
        ] {
            let chunks = echo_chunks(reply);
            assert_eq!(chunks.concat(), reply);
            assert!(chunks.len() <= 4);
        }
    }

    /// A model node that may call `forecast` (needs approval when `approval`), knowledge and
    /// the collaborator.
    fn agentic(approval: bool, max_steps: Option<u32>) -> Arc<Snapshot> {
        let mut spec = one_node(
            "openai",
            json!({"type": "model", "prompt": "Q: {{ input.q }}", "max_steps": max_steps,
                   "tools": ["forecast", "knowledge", FRIEND]}),
        );
        spec.tools[0].parameters = Some(json!({"type": "object"}));
        spec.tools[0].approval = approval;
        snapshot(&spec)
    }

    async fn from(
        version: &Arc<Snapshot>,
        fake: &Fake,
        resume: Option<Resume>,
    ) -> Result<Outcome, FlowError> {
        let start = Start {
            input: json!({"q": "weather?"}),
            resume,
            ..Start::default()
        };
        run_from(version, start, fake, None).await
    }

    #[tokio::test]
    async fn the_model_calls_tools_until_it_answers() {
        let fake = Fake::scripted(vec![
            calls(&[
                ("forecast", json!({"city": "Oslo", "days": 2})),
                ("knowledge", json!({"query": "refunds"})),
            ]),
            calls(&[(FRIEND, json!({"x": 1}))]),
            says("Sunny, and refunds take 14 days."),
        ]);
        let out = from(&agentic(false, None), &fake, None).await;
        let Ok(Outcome::Done(out)) = out else {
            panic!("{out:?}")
        };
        assert_eq!(out["text"], "Sunny, and refunds take 14 days.");
        assert_eq!(
            out["tool_calls"],
            json!([{"name": "forecast", "args": {"city": "Oslo", "days": 2}, "status": "ok"},
                   {"name": "knowledge", "args": {"query": "refunds"}, "status": "ok"},
                   {"name": FRIEND, "args": {"x": 1}, "status": "ok"}])
        );
        assert_eq!(
            fake.calls.borrow()[0],
            json!({"tool": "forecast", "path": "/forecast?city=Oslo", "body": {"days": 2}})
        );
        let chats = fake.chats.borrow();
        assert_eq!(chats.len(), 3);
        assert_eq!(
            chats[0][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            chats[0][1],
            json!({"role": "user", "content": "Q: weather?"})
        );
        // The second call carries the first answer's calls and their results, in order.
        let second = &chats[1];
        assert_eq!(second[2]["role"], "assistant");
        assert_eq!(second[3]["tool_call_id"], "c0");
        assert!(second[3]["content"]
            .as_str()
            .unwrap()
            .contains("\"temp\":21"));
        assert!(second[4]["content"]
            .as_str()
            .unwrap()
            .contains("Refunds take 14 days."));
    }

    #[tokio::test]
    async fn a_failing_tool_is_reported_to_the_model_and_max_steps_bounds_the_loop() {
        let mut fake = Fake::scripted(vec![calls(&[("forecast", json!({}))]), says("sorry")]);
        fake.tool_status = 500;
        let out = from(&agentic(false, None), &fake, None).await;
        let Ok(Outcome::Done(out)) = out else {
            panic!("{out:?}")
        };
        assert_eq!(out["tool_calls"][0]["status"], "failed");
        let told = fake.chats.borrow()[1][3]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(told.contains("tool_failed"), "{told}");

        let looping = Fake::scripted(
            (0..5)
                .map(|_| calls(&[("knowledge", json!({"query": "x"}))]))
                .collect(),
        );
        let out = from(&agentic(false, Some(2)), &looping, None).await;
        assert_eq!(
            failed_code(out.map(|_| Value::Null)),
            ("a".into(), "max_steps_exceeded".into())
        );
        assert_eq!(looping.chats.borrow().len(), 2);
    }

    #[tokio::test]
    async fn an_approval_pauses_the_loop_and_the_answer_resumes_it() {
        let version = agentic(true, None);
        let fake = Fake::scripted(vec![calls(&[("forecast", json!({"city": "Oslo"}))])]);
        let out = from(&version, &fake, None).await;
        let Ok(Outcome::Paused {
            pending,
            checkpoint,
        }) = out
        else {
            panic!("{out:?}")
        };
        assert_eq!(
            pending,
            json!({"kind": "approval", "node": "a", "tool": "forecast", "args": {"city": "Oslo"}})
        );
        assert!(
            fake.calls.borrow().is_empty(),
            "nothing called before the approval"
        );
        // The checkpoint survives being stored.
        let stored = serde_json::to_value(&checkpoint).unwrap();
        let checkpoint: Checkpoint = serde_json::from_value(stored).unwrap();

        let refused = Fake::scripted(vec![says("I may not.")]);
        let resume = Resume {
            checkpoint: checkpoint.clone(),
            answer: Answer::Approve(false),
        };
        let out = from(&version, &refused, Some(resume)).await;
        let Ok(Outcome::Done(out)) = out else {
            panic!("{out:?}")
        };
        assert_eq!(out["tool_calls"][0]["status"], "not_approved");
        assert!(refused.calls.borrow().is_empty());
        let told = refused.chats.borrow()[0].last().unwrap()["content"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(told.contains("tool_not_approved"), "{told}");

        let approved = Fake::scripted(vec![says("Sunny.")]);
        let resume = Resume {
            checkpoint,
            answer: Answer::Approve(true),
        };
        let out = from(&version, &approved, Some(resume)).await;
        assert_eq!(
            out,
            Ok(Outcome::Done(json!({"text": "Sunny.", "tool_calls": [
            {"name": "forecast", "args": {"city": "Oslo"}, "status": "ok"}]})))
        );
        assert_eq!(approved.calls.borrow().len(), 1);
    }

    #[tokio::test]
    async fn an_input_node_pauses_and_its_answer_becomes_its_output() {
        let spec = spec(
            "echo",
            None,
            json!([
                {"id": "a", "type": "transform", "output": 1, "next": "ask"},
                {"id": "ask", "type": "input", "prompt": "Which city, {{ input.name }}?", "next": "done"},
                {"id": "done", "type": "end", "output": {"a": "{{ nodes.a }}", "city": "{{ nodes.ask.city }}"}}
            ]),
        );
        let version = snapshot(&spec);
        let start = Start {
            input: json!({"name": "Ada"}),
            ..Start::default()
        };
        let out = run_from(&version, start, &Fake::default(), None).await;
        let Ok(Outcome::Paused {
            pending,
            checkpoint,
        }) = out
        else {
            panic!("{out:?}")
        };
        assert_eq!(
            pending,
            json!({"kind": "input", "node": "ask", "prompt": "Which city, Ada?"})
        );
        let start = Start {
            input: json!({"name": "Ada"}),
            resume: Some(Resume {
                checkpoint,
                answer: Answer::Input(json!({"city": "Oslo"})),
            }),
            ..Start::default()
        };
        let out = run_from(&version, start, &Fake::default(), None).await;
        assert_eq!(out, Ok(Outcome::Done(json!({"a": 1, "city": "Oslo"}))));
    }

    #[tokio::test]
    async fn history_sends_the_threads_turns_and_templates_see_them() {
        let mut spec = one_node(
            "openai",
            json!({"type": "model", "prompt": "{{ thread.turns | length }} before: {{ input.message }}", "history": true}),
        );
        spec.tools.clear();
        let turn = |i: &str, o: Option<Value>| events::run::Turn {
            request_id: Uuid::now_v7(),
            input: json!({"message": i}),
            output: o,
            at: chrono::Utc::now(),
        };
        let start = Start {
            input: json!({"message": "third"}),
            thread: Some(Thread {
                id: "t".into(),
                turns: vec![
                    turn("first", Some(json!({"text": "one"}))),
                    turn("failed", None),
                    turn("second", Some(json!("two"))),
                ],
            }),
            resume: None,
        };
        let fake = Fake::scripted(vec![says("three")]);
        let out = run_from(&snapshot(&spec), start, &fake, None).await;
        assert_eq!(
            out,
            Ok(Outcome::Done(json!({"text": "three", "tool_calls": []})))
        );
        let roles: Vec<(String, String)> = fake.chats.borrow()[0]
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap().into(),
                    m["content"].as_str().unwrap().into(),
                )
            })
            .collect();
        let expect = [
            ("system", "Be brief."),
            ("user", "first"),
            ("assistant", "one"),
            ("user", "second"),
            ("assistant", "two"),
            ("user", "3 before: third"),
        ];
        assert_eq!(roles, expect.map(|(a, b)| (a.to_owned(), b.to_owned())));
    }

    #[tokio::test(start_paused = true)]
    async fn the_model_limit_bounds_each_call_of_the_loop() {
        let mut spec = one_node(
            "openai",
            json!({"type": "model", "prompt": "p", "tools": ["knowledge"]}),
        );
        if let Some(model) = spec.model.as_mut() {
            model.timeout_s = Some(3);
        }
        let fake = Fake {
            model_delay_s: 2,
            ..Fake::scripted(vec![calls(&[("knowledge", json!({"query": "x"}))])])
        };
        let out = run_from(
            &snapshot(&spec),
            Start::default(),
            &fake,
            Some(Duration::from_secs(60)),
        )
        .await;
        assert!(
            matches!(out, Ok(Outcome::Done(_))),
            "each call is under 3 s: {out:?}"
        );
        let slow = Fake {
            model_delay_s: 4,
            ..Fake::default()
        };
        let out = run_from(
            &snapshot(&spec),
            Start::default(),
            &slow,
            Some(Duration::from_secs(60)),
        )
        .await;
        assert_eq!(
            out,
            Err(FlowError::Timeout {
                limit: Limit::Model,
                node: "a".into()
            })
        );
    }
}
