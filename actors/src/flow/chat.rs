//! Chat completions with function tools over HTTP: the one model call of the tool loop
//! ([`super::agentic`]) and of model nodes that send a thread's history.
//!
//! Not streamed: the loop needs the whole answer (its `tool_calls`) before it can act, and a
//! model that calls tools says little worth streaming. The call goes where every model call
//! goes (`base_url` + `/chat/completions`), under the same credentials, origin check and egress
//! policy as [`super::HttpEffects`]'s plain model call.

use events::spec::Model;
use serde_json::{json, Value};

use super::effects::{ChatReply, EffectError, RequestedCall};
use super::http_effects::HttpEffects;

impl HttpEffects {
    pub(super) async fn call_chat(
        &self,
        model: &Model,
        messages: &[Value],
        tools: &[Value],
    ) -> Result<ChatReply, EffectError> {
        let failed = |what: String| {
            EffectError::new("model_failed", format!("model '{}': {what}", model.name))
        };
        let mut request = json!({"model": model.name, "messages": messages});
        if !tools.is_empty() {
            request["tools"] = Value::Array(tools.to_vec());
        }
        let answer = self.chat_completion(model, &request).await?;
        parse_reply(&answer).map_err(|what| failed(what.into()))
    }
}

/// The text and tool calls of a chat completion (`choices[0].message`).
pub(super) fn parse_reply(answer: &Value) -> Result<ChatReply, &'static str> {
    let message = answer
        .pointer("/choices/0/message")
        .ok_or("the answer has no choices[0].message")?;
    let text = message
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut tool_calls = Vec::new();
    for (i, call) in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = call
            .pointer("/function/name")
            .and_then(Value::as_str)
            .ok_or("a tool call has no function.name")?;
        // OpenAI sends the arguments as JSON text; some servers send the object itself.
        let args = match call.pointer("/function/arguments") {
            Some(Value::String(text)) if text.trim().is_empty() => json!({}),
            Some(Value::String(text)) => {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
            }
            Some(other) => other.clone(),
            None => json!({}),
        };
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("call_{i}"));
        tool_calls.push(RequestedCall {
            id,
            name: name.to_owned(),
            args,
        });
    }
    if text.is_empty() && tool_calls.is_empty() && message.get("content").is_none() {
        return Err("the answer has neither content nor tool_calls");
    }
    Ok(ChatReply { text, tool_calls })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_with_text_or_tool_calls() {
        let reply = parse_reply(&json!({"choices": [{"message": {"content": "hi"}}]}));
        assert_eq!(
            reply,
            Ok(ChatReply {
                text: "hi".into(),
                tool_calls: vec![]
            })
        );
        let reply = parse_reply(&json!({"choices": [{"message": {"content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "forecast", "arguments": "{\"city\":\"Oslo\"}"}},
            {"type": "function", "function": {"name": "knowledge", "arguments": {"query": "x"}}}
        ]}}]}))
        .expect("parses");
        assert_eq!(reply.tool_calls[0].args, json!({"city": "Oslo"}));
        assert_eq!(reply.tool_calls[1].id, "call_1");
        assert_eq!(reply.tool_calls[1].args, json!({"query": "x"}));
        assert!(parse_reply(&json!({"choices": []})).is_err());
        assert!(parse_reply(&json!({"choices": [{"message": {}}]})).is_err());
    }
}
