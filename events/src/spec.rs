//! The agent specification: what a team edits as a draft and what a deployment snapshots whole.
//!
//! These types are both the HTTP request bodies and the payload of `Created`/`FlowEdited` events,
//! so every field that is not required carries `#[serde(default)]`: an old log still loads when a
//! type grows a field.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The whole draft of an agent. Only `name` is required to create one; everything else is
/// checked by validation, which blocks deploy rather than refusing the edit, so a team can save
/// work in progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub model: Option<Model>,
    /// Opaque voice settings, carried for clients that render agents; the runtime ignores them.
    #[serde(default)]
    pub voice: Option<Value>,
    /// The system prompt of every `model` node.
    #[serde(default)]
    pub instructions: String,
    #[serde(default)]
    pub knowledge: Vec<KnowledgeFile>,
    #[serde(default)]
    pub tools: Vec<Tool>,
    /// Agent ids this agent may call from `agent` nodes. Kept as strings so a malformed id is a
    /// validation problem with a path, not a parse failure of the whole draft.
    #[serde(default)]
    pub collaborators: Vec<String>,
    #[serde(default)]
    pub flow: Option<Flow>,
    /// What runs of a thread remember (`thread.turns`); absent: the last 20 turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
}

/// How much of a thread's past its runs see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Memory {
    /// The last this many turns of the thread are in `thread.turns` and, for model nodes with
    /// `history`, sent to the model (0-100, default 20).
    #[serde(default = "default_memory_turns")]
    pub turns: u32,
}

fn default_memory_turns() -> u32 {
    20
}

impl AgentSpec {
    /// How many of a thread's last turns a run sees.
    pub fn memory_turns(&self) -> usize {
        self.memory
            .as_ref()
            .map_or_else(default_memory_turns, |m| m.turns) as usize
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Model {
    /// `echo` or `openai`; anything else is an `unsupported_model` validation error, not a 400,
    /// so a draft naming a provider we do not support yet can still be saved.
    pub provider: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// Base URL of an OpenAI-compatible server (`openai` only).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Connection whose credentials authenticate model calls (`openai` only).
    #[serde(default)]
    pub connection: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KnowledgeFile {
    pub name: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Tool {
    pub name: String,
    pub connection: String,
    /// The auth type the tool expects of its connection; a mismatch is a validation error.
    pub security: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// Appended to the connection's `server`; a template over `{args, input}`.
    pub path: String,
    /// Optional request body template.
    #[serde(default)]
    pub body: Option<Value>,
    /// What the tool does, for a model that may call it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema object for the tool's `args`: what a model is told to send. Required for a
    /// tool a model node lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// A person approves each call a model makes to it: the run pauses (`input_required`)
    /// before the call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval: bool,
}

fn default_method() -> String {
    "GET".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Flow {
    pub start: String,
    #[serde(default)]
    pub nodes: Vec<Node>,
}

impl Flow {
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Node {
    pub id: String,
    #[serde(flatten)]
    pub kind: NodeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeKind {
    Transform {
        output: Value,
    },
    Model {
        prompt: String,
        /// What the model may call: tool names, `"knowledge"`, collaborator agent ids.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tools: Vec<String>,
        /// Model calls one node may make while the model keeps calling tools (1-20, default 5).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_steps: Option<u32>,
        /// Send the thread's turns to the model as earlier user/assistant messages.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        history: bool,
    },
    Tool {
        tool: String,
        #[serde(default)]
        args: Value,
    },
    Knowledge {
        query: String,
        #[serde(default = "default_top_k")]
        top_k: u32,
    },
    Condition {
        branches: Vec<Branch>,
        #[serde(default, rename = "else", skip_serializing_if = "Option::is_none")]
        otherwise: Option<String>,
    },
    Agent {
        /// The collaborator's agent id; must be listed in `collaborators`.
        agent: String,
        #[serde(default)]
        input: Value,
    },
    End {
        #[serde(default)]
        output: Value,
    },
    /// Pauses the run until a person sends its input (`POST .../requests/{rid}/input`), which
    /// becomes this node's output.
    Input {
        /// What the person is asked (a template).
        #[serde(default)]
        prompt: String,
    },
}

fn default_top_k() -> u32 {
    3
}

impl NodeKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeKind::Transform { .. } => "transform",
            NodeKind::Model { .. } => "model",
            NodeKind::Tool { .. } => "tool",
            NodeKind::Knowledge { .. } => "knowledge",
            NodeKind::Condition { .. } => "condition",
            NodeKind::Agent { .. } => "agent",
            NodeKind::End { .. } => "end",
            NodeKind::Input { .. } => "input",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Branch {
    /// A MiniJinja expression over `{input, nodes}`.
    pub when: String,
    pub next: String,
}

/// Accepted ranges and sizes, in one place: validation, `decide` and the docs use these.
pub mod limits;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_example_parses_and_round_trips() {
        let json = serde_json::json!({
          "name": "Weather helper", "description": "Answers weather questions",
          "model": {"provider": "echo", "name": "echo-1", "timeout_s": 30},
          "voice": null,
          "instructions": "You answer briefly.",
          "knowledge": [{"name": "faq.md", "content": "..."}],
          "tools": [{"name": "forecast", "connection": "weather", "security": "api_key",
                     "method": "GET", "path": "/forecast?city={{ args.city }}"}],
          "collaborators": [],
          "flow": {"start": "greet", "nodes": [
            {"id": "greet", "type": "transform", "output": {"text": "Hello {{ input.name }}"}, "next": "done"},
            {"id": "done", "type": "end", "output": {"greeting": "{{ nodes.greet.text }}"}}
          ]}
        });
        let spec: AgentSpec = serde_json::from_value(json).expect("parses");
        let flow = spec.flow.as_ref().expect("flow");
        assert_eq!(flow.nodes[0].next.as_deref(), Some("done"));
        assert!(matches!(flow.nodes[1].kind, NodeKind::End { .. }));
        let again: AgentSpec =
            serde_json::from_value(serde_json::to_value(&spec).expect("serializes"))
                .expect("parses");
        assert_eq!(again, spec);
    }

    #[test]
    fn condition_else_keeps_its_name() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "id": "c", "type": "condition", "branches": [{"when": "input.x > 1", "next": "a"}], "else": "b"
        }))
        .expect("parses");
        let back = serde_json::to_value(&node).expect("serializes");
        assert_eq!(back["else"], "b");
    }
}
