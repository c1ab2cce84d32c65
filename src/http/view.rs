//! What clients see of an agent: the response bodies of the management API, computed from the
//! state. Secrets appear here only redacted.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use events::check::Check;
use events::connection::{Connection, CredentialMode};
use events::endpoint::EndpointSettings;
use events::secret::REDACTED;
use events::spec::{AgentSpec, Model};
use events::state::{AgentState, ConnectionState, Status};
use events::validation::{validate_agent, Directory, Problem, Report};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentView {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub status: Status,
    pub draft: AgentSpec,
    pub live_version: Option<u32>,
    pub deployed_at: Option<DateTime<Utc>>,
    pub seq: u64,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl AgentView {
    pub fn of(state: &AgentState) -> Self {
        AgentView {
            id: state.id,
            name: state.draft.name.clone(),
            description: state.draft.description.clone(),
            status: state.status,
            draft: state.draft.clone(),
            live_version: state.live_version,
            deployed_at: state.live().map(|v| v.deployed_at),
            seq: state.seq,
            created_at: state.created_at,
            updated_at: state.updated_at,
        }
    }
}

/// The shape of what [`endpoint_view`] answers, for the OpenAPI document (nothing is built from
/// it): the stored settings with the push token hidden, plus the push signing secret.
#[derive(Debug, Clone, ToSchema)]
#[allow(dead_code)] // Its fields are read by its Serialize derive only.
pub struct EndpointView {
    pub sync_timeout_s: u64,
    pub max_concurrency: u32,
    #[schema(rename = "async")]
    pub asynchronous: AsyncView,
    /// `whsec_…` in full only in the answer that made it, then `"whsec_***"`; `null` until push
    /// is first enabled.
    pub signing_secret: Option<String>,
}

/// The async part of [`EndpointView`].
#[derive(Debug, Clone, ToSchema)]
#[allow(dead_code)] // Its fields are read by its Serialize derive only.
pub struct AsyncView {
    pub push_enabled: bool,
    pub url: Option<String>,
    /// `"***"` when a token is stored, else `null`.
    pub token: Option<String>,
    /// `null`: no time limit.
    pub timeout_s: Option<u64>,
}

/// Endpoint settings with the token hidden and the signing secret shown only when it was just made.
pub fn endpoint_view(
    settings: &EndpointSettings,
    has_signing_secret: bool,
    revealed: Option<&str>,
) -> Value {
    let mut v = serde_json::to_value(settings).unwrap_or(Value::Null);
    if let Some(token) = v.pointer_mut("/async/token") {
        if !token.is_null() {
            *token = Value::String(REDACTED.into());
        }
    }
    let secret = match revealed {
        Some(s) => Value::String(s.to_owned()),
        None if has_signing_secret => Value::String(format!("whsec_{REDACTED}")),
        None => Value::Null,
    };
    if let Value::Object(map) = &mut v {
        map.insert("signing_secret".into(), secret);
    }
    v
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectionView {
    #[serde(flatten)]
    #[schema(value_type = Connection<String>)]
    pub connection: Connection<&'static str>,
    /// `ready`, or `needs_member_credentials` for a member connection no member has set up yet.
    pub status: &'static str,
    /// Members with their own (draft) credentials.
    pub members: Vec<String>,
    /// Members with their own live credentials.
    pub live_members: Vec<String>,
    /// The latest check of each set of credentials (per environment and member) since they
    /// were last set.
    pub checks: Vec<Check>,
}

impl ConnectionView {
    pub fn of(c: &ConnectionState) -> Self {
        ConnectionView {
            connection: c.connection.redacted(),
            status: connection_status(c),
            members: c.members.keys().cloned().collect(),
            live_members: c.live_members.keys().cloned().collect(),
            checks: c.checks.clone(),
        }
    }
}

fn connection_status(c: &ConnectionState) -> &'static str {
    match c.connection.credentials {
        CredentialMode::Team => "ready",
        CredentialMode::Member if c.members.is_empty() && c.live_members.is_empty() => {
            "needs_member_credentials"
        }
        CredentialMode::Member => "ready",
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionView {
    pub version: u32,
    pub deployed_at: DateTime<Utc>,
    pub seq: u64,
    pub rollback_of: Option<u32>,
    pub live: bool,
}

pub fn versions(state: &AgentState) -> Vec<VersionView> {
    state
        .versions
        .iter()
        .map(|v| VersionView {
            version: v.version,
            deployed_at: v.deployed_at,
            seq: v.seq,
            rollback_of: v.rollback_of,
            live: state.live_version == Some(v.version),
        })
        .collect()
}

/// The live version without its URLs, which only the HTTP layer knows.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeploymentView {
    pub agent_id: Uuid,
    pub version: u32,
    pub deployed_at: DateTime<Utc>,
    pub rollback_of: Option<u32>,
    pub spec: AgentSpec,
    #[schema(value_type = EndpointView)]
    pub endpoint: Value,
    #[schema(value_type = Vec<Connection<String>>)]
    pub connections: Vec<Connection<&'static str>>,
}

pub fn deployment(state: &AgentState) -> Option<DeploymentView> {
    let v = state.live()?;
    Some(DeploymentView {
        agent_id: state.id,
        version: v.version,
        deployed_at: v.deployed_at,
        rollback_of: v.rollback_of,
        spec: v.snapshot.spec.clone(),
        endpoint: endpoint_view(&v.snapshot.endpoint, state.signing_secret.is_some(), None),
        connections: v
            .snapshot
            .connections
            .iter()
            .map(Connection::redacted)
            .collect(),
    })
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ValidationView {
    pub ok: bool,
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

pub fn validation(state: &AgentState, directory: &dyn Directory) -> ValidationView {
    let report = validate_agent(state, &state.draft, &state.draft_connections(), directory);
    ValidationView {
        ok: report.ok(),
        errors: report.errors,
        warnings: report.warnings,
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Summary {
    pub profile: Profile,
    pub knowledge: Vec<KnowledgeEntry>,
    pub tools: Vec<ToolEntry>,
    pub collaborators: Vec<CollaboratorEntry>,
    pub behavior: Behavior,
    pub connections: Vec<ConnectionEntry>,
    /// What each model node's model may call on its own (its `tools`), so the team sees what it
    /// lets a model do before it deploys.
    pub model_tools: Vec<ModelToolsEntry>,
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
    pub can_deploy: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelToolsEntry {
    /// The model node's id.
    pub node: String,
    /// Model calls the node may make (`max_steps`).
    pub max_steps: u32,
    /// Whether the model gets the thread's earlier turns.
    pub history: bool,
    pub tools: Vec<ModelTool>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelTool {
    pub name: String,
    /// `tool` (one of the agent's tools), `knowledge` or `collaborator`; `unknown` for a name
    /// that is none of these (a validation error).
    pub kind: &'static str,
    /// For a tool: the connection its calls go to.
    pub connection: Option<String>,
    /// A person approves each call first.
    pub approval: bool,
}

fn model_tools(spec: &events::spec::AgentSpec) -> Vec<ModelToolsEntry> {
    use events::spec::NodeKind;
    let nodes = spec.flow.iter().flat_map(|f| &f.nodes);
    nodes
        .filter_map(|node| match &node.kind {
            NodeKind::Model {
                tools,
                max_steps,
                history,
                ..
            } if !tools.is_empty() || *history => Some(ModelToolsEntry {
                node: node.id.clone(),
                max_steps: max_steps.unwrap_or(events::spec::limits::DEFAULT_MAX_STEPS),
                history: *history,
                tools: tools
                    .iter()
                    .map(|name| {
                        let tool = spec.tools.iter().find(|t| t.name == *name);
                        let kind = if name == events::validation::KNOWLEDGE_TOOL {
                            "knowledge"
                        } else if tool.is_some() {
                            "tool"
                        } else if spec.collaborators.contains(name) {
                            "collaborator"
                        } else {
                            "unknown"
                        };
                        ModelTool {
                            name: name.clone(),
                            kind,
                            connection: tool.map(|t| t.connection.clone()),
                            approval: tool.is_some_and(|t| t.approval),
                        }
                    })
                    .collect(),
            }),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub model: Option<Model>,
    pub voice: Option<Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KnowledgeEntry {
    pub name: String,
    pub bytes: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ToolEntry {
    pub name: String,
    pub connection: String,
    pub security: String,
    /// The tool's `security` equals its connection's auth type (false for an unknown connection).
    pub security_matches: bool,
    /// A person approves each call a model makes to it.
    pub approval: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CollaboratorEntry {
    pub id: String,
    pub name: Option<String>,
    pub live: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Behavior {
    pub instructions: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectionEntry {
    pub id: String,
    pub display_name: String,
    pub server: String,
    pub associated_tools: Vec<String>,
    /// Part of the live version's snapshot.
    pub live: bool,
    /// What the latest checks of its credentials say (the worst of them, per environment and
    /// member): `authenticated`, `rejected` (a warning: blocks deploy), `unreachable`;
    /// `unchecked` since its credentials were last set; `needs_member_credentials` for a
    /// member connection no member has credentials for.
    #[schema(
        pattern = "^(authenticated|rejected|unreachable|unchecked|needs_member_credentials)$"
    )]
    pub status: &'static str,
    /// When the check that gives `status` was made; `null` when unchecked.
    pub checked_at: Option<DateTime<Utc>>,
}

pub fn summary(state: &AgentState, directory: &dyn Directory) -> Summary {
    let spec = &state.draft;
    let Report { errors, warnings } =
        validate_agent(state, spec, &state.draft_connections(), directory);
    let live_connections: Vec<&str> = state
        .live()
        .map(|v| {
            v.snapshot
                .connections
                .iter()
                .map(|c| c.id.as_str())
                .collect()
        })
        .unwrap_or_default();
    Summary {
        profile: Profile {
            name: spec.name.clone(),
            description: spec.description.clone(),
            model: spec.model.clone(),
            voice: spec.voice.clone(),
        },
        knowledge: spec
            .knowledge
            .iter()
            .map(|k| KnowledgeEntry {
                name: k.name.clone(),
                bytes: k.content.len(),
            })
            .collect(),
        tools: spec
            .tools
            .iter()
            .map(|t| ToolEntry {
                name: t.name.clone(),
                connection: t.connection.clone(),
                security: t.security.clone(),
                security_matches: state
                    .connections
                    .get(&t.connection)
                    .is_some_and(|c| c.connection.auth.type_name() == t.security),
                approval: t.approval,
            })
            .collect(),
        collaborators: spec
            .collaborators
            .iter()
            .map(|id| {
                let found = id
                    .parse()
                    .ok()
                    .and_then(|uuid| directory.collaborator(uuid));
                CollaboratorEntry {
                    id: id.clone(),
                    live: found.as_ref().is_some_and(|c| c.live),
                    name: found.map(|c| c.name),
                }
            })
            .collect(),
        behavior: Behavior {
            instructions: spec.instructions.clone(),
        },
        connections: state
            .connections
            .values()
            .map(|c| ConnectionEntry {
                id: c.connection.id.clone(),
                display_name: c.connection.display_name.clone(),
                server: c.connection.server.clone(),
                associated_tools: spec
                    .tools
                    .iter()
                    .filter(|t| t.connection == c.connection.id)
                    .map(|t| t.name.clone())
                    .collect(),
                live: live_connections.contains(&c.connection.id.as_str()),
                status: events::check::status(c).0.as_str(),
                checked_at: events::check::status(c).1,
            })
            .collect(),
        model_tools: model_tools(spec),
        can_deploy: errors.is_empty() && warnings.is_empty(),
        errors,
        warnings,
    }
}
