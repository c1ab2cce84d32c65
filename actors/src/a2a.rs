//! A2A's view of a run (for the A2A binding in `src/http/a2a` and for A2A push notifications): a task **is** a run (task id = request id), its `contextId` is kept in
//! the run's input (`input.a2a.contextId`), its output comes back as one artifact. Also the
//! reverse: an A2A message as a run's input.

use events::run::{Run, RunStatus, StoredRun};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// The task state of a run status (A2A 1.0 names).
pub fn state(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Queued => "TASK_STATE_SUBMITTED",
        RunStatus::Running => "TASK_STATE_WORKING",
        RunStatus::Succeeded => "TASK_STATE_COMPLETED",
        RunStatus::Failed | RunStatus::TimedOut => "TASK_STATE_FAILED",
        RunStatus::Cancelled => "TASK_STATE_CANCELED",
        RunStatus::InputRequired => "TASK_STATE_INPUT_REQUIRED",
    }
}

/// Whether a task in this state will not change any more (or waits for a person): a stream
/// ends there.
pub fn settled(status: RunStatus) -> bool {
    status.is_final() || status == RunStatus::InputRequired
}

/// The `contextId` a run was given (kept in `input.a2a.contextId`); runs not made over A2A
/// have their request id as context.
pub fn context_of(run: &StoredRun) -> String {
    run.input
        .pointer("/a2a/contextId")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| run.run.request_id.to_string())
}

/// The status of a task: state, when it got there, and for a failure the reason as a message.
fn status(run: &Run, context: &str) -> Value {
    let at = run.finished_at.or(run.started_at).unwrap_or(run.created_at);
    let mut status = json!({"state": state(run.status), "timestamp": at.to_rfc3339()});
    if let Some(error) = &run.error {
        status["message"] = json!({
            "messageId": format!("{}-status", run.request_id),
            "contextId": context,
            "taskId": run.request_id,
            "role": "ROLE_AGENT",
            "parts": [{"text": error.message}],
            "metadata": {"code": error.code, "details": error.details},
        });
    }
    status
}

/// The run's output as one artifact: a data part (the output as it is, wrapped as
/// `{"value": …}` when it is not an object), plus a text part when the output is text.
pub fn artifact(run: &Run) -> Option<Value> {
    let output = run.output.as_ref()?;
    let mut parts = Vec::new();
    let text = match output {
        Value::String(s) => Some(s.clone()),
        other => other.get("text").and_then(Value::as_str).map(str::to_owned),
    };
    if let Some(text) = text {
        parts.push(json!({ "text": text }));
    }
    let data = if output.is_object() {
        output.clone()
    } else {
        json!({ "value": output })
    };
    parts.push(json!({"data": data, "mediaType": "application/json"}));
    Some(
        json!({"artifactId": format!("{}-output", run.request_id), "name": "output", "parts": parts}),
    )
}

/// The A2A task of a stored run.
pub fn task(run: &StoredRun) -> Value {
    let context = context_of(run);
    let mut task = json!({
        "id": run.run.request_id,
        "contextId": context,
        "status": status(&run.run, &context),
        "metadata": {"agentId": run.run.agent_id, "version": run.run.version},
    });
    if let Some(artifact) = artifact(&run.run) {
        task["artifacts"] = json!([artifact]);
    }
    if let Some(message) = message_of(run) {
        task["history"] = json!([message]);
    }
    task
}

/// The message that started a task made over A2A, rebuilt from what its input keeps.
pub fn message_of(run: &StoredRun) -> Option<Value> {
    let a2a = run.input.get("a2a")?;
    let mut message = json!({
        "messageId": a2a.get("messageId"),
        "contextId": a2a.get("contextId"),
        "taskId": run.run.request_id,
        "role": "ROLE_USER",
        "parts": a2a.get("parts"),
    });
    if let Some(metadata) = a2a.get("metadata").filter(|m| !m.is_null()) {
        message["metadata"] = metadata.clone();
    }
    Some(message)
}

/// The task of a run as `run.finished` carries it (no input: its context comes from `context`).
pub fn task_of_run(run: &Run, context: &str) -> Value {
    let mut task = json!({
        "id": run.request_id,
        "contextId": context,
        "status": status(run, context),
        "metadata": {"agentId": run.agent_id, "version": run.version},
    });
    if let Some(artifact) = artifact(run) {
        task["artifacts"] = json!([artifact]);
    }
    task
}

/// Why a message cannot become a run's input.
pub struct BadMessage(pub String);

/// A message as a run's input: its text parts joined are `message`, its data parts merged in,
/// and the whole of it, with its (possibly new) `contextId`, under `a2a`.
pub fn input_of(message: &Value) -> Result<(Value, String), BadMessage> {
    let message = message
        .as_object()
        .ok_or_else(|| BadMessage("params.message must be an object".into()))?;
    let parts = message
        .get("parts")
        .and_then(Value::as_array)
        .ok_or_else(|| BadMessage("params.message.parts must be an array".into()))?;
    let mut input = Map::new();
    let mut texts = Vec::new();
    for part in parts {
        let kind = part.get("kind").and_then(Value::as_str);
        if let Some(text) = part.get("text").and_then(Value::as_str) {
            texts.push(text.to_owned());
        } else if let Some(Value::Object(data)) = part.get("data") {
            // 0.3 wraps a data part as {"kind": "data", "data": {...}} too.
            input.extend(data.clone());
        } else if kind.is_none()
            && part.get("raw").is_none()
            && part.get("url").is_none()
            && part.get("file").is_none()
            && part.get("data").is_none()
        {
            return Err(BadMessage(
                "each part of params.message.parts needs text, data, raw or url".into(),
            ));
        }
    }
    if !texts.is_empty() {
        input.insert("message".into(), json!(texts.join("\n")));
    }
    let context = message
        .get("contextId")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    if context.len() > 128 {
        return Err(BadMessage(
            "params.message.contextId is longer than 128 characters".into(),
        ));
    }
    input.insert(
        "a2a".into(),
        json!({
            "messageId": message.get("messageId"),
            "contextId": context,
            "metadata": message.get("metadata"),
            "parts": parts,
        }),
    );
    Ok((Value::Object(input), context))
}

/// A 1.0 document in 0.3's wire form, for callers that speak 0.3 (no `A2A-Version` header):
/// lowercase states with `kind` discriminators.
pub fn to_v03(value: Value) -> Value {
    match value {
        Value::Object(mut map) => {
            if let Some(Value::String(state)) = map.get("state") {
                let short = state
                    .trim_start_matches("TASK_STATE_")
                    .to_ascii_lowercase()
                    .replace('_', "-");
                map.insert("state".into(), json!(short));
            }
            if let Some(Value::String(role)) = map.get("role") {
                let short = role.trim_start_matches("ROLE_").to_ascii_lowercase();
                map.insert("role".into(), json!(short));
            }
            if map.contains_key("text") && !map.contains_key("kind") {
                map.insert("kind".into(), json!("text"));
            } else if map.contains_key("data") && !map.contains_key("kind") && map.len() <= 3 {
                map.insert("kind".into(), json!("data"));
            }
            if map.contains_key("artifactId") && map.contains_key("parts") {
                // an artifact: no kind in 0.3
            } else if map.contains_key("messageId") && map.contains_key("parts") {
                map.insert("kind".into(), json!("message"));
            } else if map.contains_key("contextId")
                && map.contains_key("status")
                && map.contains_key("id")
            {
                map.insert("kind".into(), json!("task"));
            }
            // In place: a task is converted on every 0.3 answer.
            for v in map.values_mut() {
                *v = to_v03(std::mem::take(v));
            }
            Value::Object(map)
        }
        Value::Array(mut items) => {
            for v in &mut items {
                *v = to_v03(std::mem::take(v));
            }
            Value::Array(items)
        }
        other => other,
    }
}
