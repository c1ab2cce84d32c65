//! The real [`Effects`]: tools and OpenAI-compatible models over HTTP (awc), collaborators
//! through a callback into the runtime.
//!
//! Credentials stay sealed until the moment a request is built; the opened secrets live only in
//! header values marked sensitive and are never logged. Redirects are not followed, so a tool
//! cannot bounce a request and its credentials to another host. Every connection passes the
//! egress policy ([`crate::egress`]) on the addresses its host resolves to; a refusal fails the
//! call with `egress_denied`. The client has no answer timeout of its own: a call is bounded by
//! the run's deadlines (agent, node, model), which the interpreter enforces by dropping it, so
//! a run with no time limit at all (async `timeout_s: null`, no node or model limit) waits for
//! its tool or model as long as it takes, or until it is cancelled. Only connecting is capped.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use awc::http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use awc::http::Method;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use events::connection::{Auth, Connection, CredentialMode, Environment};
use events::event::Snapshot;
use events::secret::{Cipher, Sealed};
use events::spec::Model;
use events::AgentState;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use serde_json::{json, Value};
use uuid::Uuid;

use super::effects::{excerpt, ChatReply, EffectError, Effects, Progress, ToolCall, ToolResponse};
use super::model_stream;
use super::tool_url::tool_url;
use crate::egress;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read from a tool or a model.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// How a collaborator is run: the runtime's business, handed in as a callback.
pub type AgentCall = Rc<dyn Fn(Uuid, Value) -> LocalBoxFuture<'static, Result<Value, EffectError>>>;

/// The effects of one run of one deployed version (or of a preview of the draft).
pub struct HttpEffects {
    /// The agent whose version this is: its secrets were sealed for it and open for no other.
    pub agent_id: Uuid,
    /// The version being run: its connections (sealed) are the only servers a tool may reach.
    pub snapshot: Arc<Snapshot>,
    /// The agent as it stands now, for the credentials a run takes from it rather than from its
    /// version: members' own (they rotate them without a redeploy) and the live environment's
    /// (a rollback keeps using the connection's current live credentials).
    pub current: Arc<AgentState>,
    /// Which credentials this run uses: `Live` for runs of a deployed version, `Draft` for
    /// previews, which never send live credentials.
    pub environment: Environment,
    /// The member the caller acts as (its key's member, or the admin's `X-Hangar-Member`), which
    /// picks the credentials of `member` connections.
    pub member: Option<String>,
    /// Opens the sealed secrets, at call time only.
    pub cipher: Arc<Cipher>,
    /// Runs a live collaborator.
    pub agent: AgentCall,
    /// Where the run's progress goes (its run events); `None` records nothing (previews). With
    /// it, model calls stream and report their pieces.
    pub progress: Option<Rc<dyn Fn(Progress)>>,
}

thread_local! {
    /// awc's client is `!Send`; one per arbiter thread shares its connection pool.
    static CLIENT: awc::Client = build_client();
}

pub(crate) fn client() -> awc::Client {
    CLIENT.with(Clone::clone)
}

fn build_client() -> awc::Client {
    build_client_with(egress::connector())
}

/// Every connection goes through the egress policy's connector: resolved, filtered, then opened.
fn build_client_with(connector: awc::Connector<egress::Connector>) -> awc::Client {
    awc::Client::builder()
        .disable_redirects()
        // Not awc's default 5 s, nor any fixed cap: the run's own deadlines bound each call
        // (see the module's comment); a fixed cap would fail a run that has no limit.
        .disable_timeout()
        .connector(connector.timeout(CONNECT_TIMEOUT))
        .add_default_header(("user-agent", "hangar"))
        .finish()
}

/// Why a request got no answer.
pub(super) enum NoAnswer {
    /// The egress policy refused the destination: retrying cannot help, the operator or the
    /// agent's author must change something.
    Refused(egress::Denied),
    /// Anything else: connection refused, TLS, timeout, a body too large.
    Failed(String),
}

impl NoAnswer {
    pub(super) fn into_effect_error(
        self,
        failed: impl FnOnce(String) -> EffectError,
        what: &str,
    ) -> EffectError {
        match self {
            NoAnswer::Refused(denied) => {
                EffectError::new("egress_denied", format!("{what}: {denied}"))
            }
            NoAnswer::Failed(why) => failed(why),
        }
    }
}

pub(crate) type Headers = Vec<(HeaderName, HeaderValue)>;

impl HttpEffects {
    /// The connection `id` of this version and the headers that authenticate with it.
    pub(super) fn authenticate(
        &self,
        id: &str,
    ) -> Result<(&Connection<Sealed>, Headers), EffectError> {
        let connection = self
            .snapshot
            .connections
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| {
                EffectError::new(
                    "unknown_connection",
                    format!(
                        "connection '{id}' is not part of this version: add it and deploy again"
                    ),
                )
            })?;
        let current = self.current.connections.get(id);
        let (sealed, member, sealed_in) = match connection.credentials {
            CredentialMode::Team => {
                let (auth, env) = self.team_credentials(connection, current);
                (auth, None, env)
            }
            CredentialMode::Member => {
                let member = self.member.as_deref().ok_or_else(|| {
                    EffectError::new(
                        "missing_member_credentials",
                        format!(
                            "connection '{id}' uses member credentials: call with an invocation \
                             key issued for a member (or, with the admin token, X-Hangar-Member)"
                        ),
                    )
                })?;
                let (auth, env) = current
                    .and_then(|c| c.credentials(Some(member), self.environment))
                    .ok_or_else(|| {
                        EffectError::new(
                            "missing_member_credentials",
                            format!(
                                "member '{member}' has no credentials for connection '{id}': set \
                                 them with PUT .../connections/{id}/members/{member}"
                            ),
                        )
                    })?;
                (auth, Some(member), env)
            }
        };
        // Opened at their place: this agent, this connection with this version's server, the
        // member and the environment. Credentials copied there from elsewhere in the log, or set
        // for another server than the one this version calls, do not open, and nothing is sent.
        let opened = sealed
            .open(&self.cipher, |field| {
                connection.place_in(self.agent_id, member, sealed_in, field)
            })
            .map_err(|_| {
                EffectError::new(
                    "credentials_unreadable",
                    format!(
                        "the credentials of connection '{id}' cannot be opened: they were sealed \
                         with another secret key, or for another agent, connection, member or \
                         server than this version's '{}' (set them again, or deploy the version \
                         they were set for)",
                        connection.server
                    ),
                )
            })?;
        let fallback_header = match &connection.auth {
            Auth::ApiKey { header, .. } => header.as_str(),
            _ => "",
        };
        Ok((connection, auth_headers(id, &opened, fallback_header)?))
    }

    /// The team credentials of `connection` (this version's) for this run, and the environment
    /// they were sealed for. A live run uses the connection's live credentials as they stand
    /// now while it still goes to this version's server (a rollback included); when it was
    /// moved or removed since, the live credentials this version was deployed with; and with
    /// no live credentials at all, the version's `auth`, as before environments existed.
    fn team_credentials<'a>(
        &self,
        connection: &'a Connection<Sealed>,
        current: Option<&'a events::state::ConnectionState>,
    ) -> (&'a Auth<Sealed>, Environment) {
        if self.environment == Environment::Live {
            let live = match current.filter(|c| c.connection.server == connection.server) {
                Some(now) => now.connection.live_auth(),
                None => connection.live_auth(),
            };
            if let Some(auth) = live {
                return (auth, Environment::Live);
            }
        }
        (&connection.auth, Environment::Draft)
    }

    /// A connection's credentials go only to its own server's origin. Validation refuses a draft
    /// whose `base_url` is elsewhere, but a preview runs the draft unvalidated (and a version
    /// deployed before the rule existed was never checked), so the call is refused here too,
    /// before any secret is opened.
    pub(super) fn check_model_origin(&self, id: &str, base_url: &str) -> Result<(), EffectError> {
        let Some(connection) = self.snapshot.connections.iter().find(|c| c.id == id) else {
            // `authenticate` names the missing connection.
            return Ok(());
        };
        if events::egress::same_origin(base_url, &connection.server) {
            return Ok(());
        }
        Err(EffectError::new(
            "connection_origin_mismatch",
            format!(
                "model base_url {base_url} is not on the server of connection '{id}' ({}): its \
                 credentials go only there; point base_url at that server",
                connection.server
            ),
        ))
    }

    async fn call_tool(&self, call: ToolCall<'_>) -> Result<ToolResponse, EffectError> {
        let tool = &call.tool.name;
        let (connection, headers) = self.authenticate(&call.tool.connection)?;
        let method = Method::from_bytes(call.tool.method.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                EffectError::new(
                    "invalid_tool",
                    format!(
                        "tool '{tool}' has an invalid HTTP method '{}'",
                        call.tool.method
                    ),
                )
            })?;
        let url = tool_url(tool, &connection.server, &call.path)?;
        tracing::debug!(%tool, connection = %connection.id, %method, "tool call");
        let unreachable = |what: String| {
            EffectError::new(
                "tool_unreachable",
                format!("tool '{tool}' at {}: {what}", connection.server),
            )
        };
        let (status, body) = send(&client(), method, &url, headers, call.body.as_ref())
            .await
            .map_err(|e| {
                e.into_effect_error(
                    unreachable,
                    &format!("tool '{tool}' at {}", connection.server),
                )
            })?;
        Ok(ToolResponse {
            status,
            body: parse_body(&body),
        })
    }

    /// Where `model` is called (its `base_url`, without a trailing `/`) and the headers that
    /// authenticate with its connection, checked to be on that connection's origin.
    pub(super) fn model_endpoint<'m>(
        &self,
        model: &'m Model,
    ) -> Result<(&'m str, Headers), EffectError> {
        let base = model
            .base_url
            .as_deref()
            .map(|url| url.trim().trim_end_matches('/'))
            .filter(|url| !url.is_empty())
            .ok_or_else(|| {
                EffectError::new(
                    "model_failed",
                    format!(
                        "model '{}': set model.base_url to the server's OpenAI-compatible API",
                        model.name
                    ),
                )
            })?;
        let headers = match &model.connection {
            Some(id) => {
                self.check_model_origin(id, base)?;
                self.authenticate(id)?.1
            }
            None => Vec::new(),
        };
        Ok((base, headers))
    }

    /// POSTs `request` to `model`'s `/chat/completions` and returns the answer's JSON; a
    /// transport failure or a non-2xx answer is `model_failed`. Not streamed.
    pub(super) async fn chat_completion(
        &self,
        model: &Model,
        request: &Value,
    ) -> Result<Value, EffectError> {
        let failed = |what: String| {
            EffectError::new("model_failed", format!("model '{}': {what}", model.name))
        };
        let (base, headers) = self.model_endpoint(model)?;
        let url = format!("{base}/chat/completions");
        let (status, body) = send(&client(), Method::POST, &url, headers, Some(request))
            .await
            .map_err(|e| {
                e.into_effect_error(
                    |what| failed(format!("{base} could not be reached: {what}")),
                    &format!("model '{}'", model.name),
                )
            })?;
        let answer = parse_body(&body);
        if !(200..300).contains(&status) {
            return Err(failed(format!(
                "the server answered HTTP {status}: {}",
                excerpt(&answer)
            )));
        }
        Ok(answer)
    }

    async fn call_model(
        &self,
        model: &Model,
        system: &str,
        prompt: &str,
    ) -> Result<String, EffectError> {
        let failed = |what: String| {
            EffectError::new("model_failed", format!("model '{}': {what}", model.name))
        };
        let request = json!({
            "model": model.name,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
        });
        let answer = self.chat_completion(model, &request).await?;
        answer
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| failed("the answer has no choices[0].message.content".into()))
    }
}

impl HttpEffects {
    /// As `call_model`, with `"stream": true`: each piece of the reply is reported as a
    /// `model.delta` as it arrives (`model_stream`). Kept apart from `call_model` so that the
    /// plain call stays as it is for callers that do not stream.
    async fn call_model_streaming(
        &self,
        model: &Model,
        system: &str,
        prompt: &str,
        progress: Rc<dyn Fn(Progress)>,
    ) -> Result<String, EffectError> {
        use futures_util::StreamExt;
        let failed = |what: String| {
            EffectError::new("model_failed", format!("model '{}': {what}", model.name))
        };
        let (base, headers) = self.model_endpoint(model)?;
        let body = json!({
            "model": model.name,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            "stream": true,
        });
        let url = format!("{base}/chat/completions");
        let mut request = client().post(&url);
        for header in headers {
            request = request.insert_header(header);
        }
        let mut response = request.send_json(&body).await.map_err(|e| {
            let no_answer = match egress::denied(&e) {
                Some(denied) => NoAnswer::Refused(denied.clone()),
                None => NoAnswer::Failed(e.to_string()),
            };
            no_answer.into_effect_error(
                |what| failed(format!("{base} could not be reached: {what}")),
                &format!("model '{}'", model.name),
            )
        })?;
        let status = response.status().as_u16();
        let is_stream = response
            .headers()
            .get(awc::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !(200..300).contains(&status) || !is_stream {
            let bytes = response
                .body()
                .limit(MAX_BODY)
                .await
                .map_err(|e| failed(format!("reading the answer failed: {e}")))?;
            let answer = parse_body(&bytes);
            if !(200..300).contains(&status) {
                return Err(failed(format!(
                    "the server answered HTTP {status}: {}",
                    excerpt(&answer)
                )));
            }
            let reply = model_stream::whole_reply(&answer)
                .ok_or_else(|| failed("the answer has no choices[0].message.content".into()))?;
            progress(Progress::ModelDelta {
                text: reply.clone(),
            });
            return Ok(reply);
        }
        let mut parser = model_stream::ChatStream::default();
        let stream_failed = |e: model_stream::StreamError| match e {
            model_stream::StreamError::Server(message) => {
                failed(format!("the server reported an error: {message}"))
            }
            model_stream::StreamError::TooLarge => {
                failed(format!("the reply is larger than {MAX_BODY} bytes"))
            }
            model_stream::StreamError::Empty => failed("the stream ended without a reply".into()),
        };
        while let Some(bytes) = response.next().await {
            let bytes = bytes.map_err(|e| failed(format!("reading the answer failed: {e}")))?;
            for text in parser.feed(&bytes).map_err(stream_failed)? {
                progress(Progress::ModelDelta { text });
            }
        }
        parser.finish().map_err(stream_failed)
    }
}

impl Effects for HttpEffects {
    fn model<'a>(
        &'a self,
        model: &'a Model,
        system: &'a str,
        prompt: &'a str,
    ) -> LocalBoxFuture<'a, Result<String, EffectError>> {
        match &self.progress {
            Some(progress) => self
                .call_model_streaming(model, system, prompt, progress.clone())
                .boxed_local(),
            None => self.call_model(model, system, prompt).boxed_local(),
        }
    }

    fn progress(&self, progress: Progress) {
        if let Some(report) = &self.progress {
            report(progress);
        }
    }

    fn chat<'a>(
        &'a self,
        model: &'a Model,
        messages: &'a [Value],
        tools: &'a [Value],
    ) -> LocalBoxFuture<'a, Result<ChatReply, EffectError>> {
        self.call_chat(model, messages, tools).boxed_local()
    }

    fn tool<'a>(
        &'a self,
        call: ToolCall<'a>,
    ) -> LocalBoxFuture<'a, Result<ToolResponse, EffectError>> {
        self.call_tool(call).boxed_local()
    }

    fn agent<'a>(
        &'a self,
        agent: Uuid,
        input: Value,
    ) -> LocalBoxFuture<'a, Result<Value, EffectError>> {
        (self.agent)(agent, input)
    }
}

/// Sends one request; the status and raw body, or why no answer came.
async fn send(
    client: &awc::Client,
    method: Method,
    url: &str,
    headers: Headers,
    body: Option<&Value>,
) -> Result<(u16, Vec<u8>), NoAnswer> {
    let mut request = client.request(method, url);
    for header in headers {
        request = request.insert_header(header);
    }
    let sent = match body {
        Some(body) => request.send_json(body).await,
        None => request.send().await,
    };
    let mut response = sent.map_err(|e| match egress::denied(&e) {
        Some(denied) => NoAnswer::Refused(denied.clone()),
        None => NoAnswer::Failed(e.to_string()),
    })?;
    let status = response.status().as_u16();
    let bytes = response
        .body()
        .limit(MAX_BODY)
        .await
        .map_err(|e| NoAnswer::Failed(format!("reading the answer failed: {e}")))?;
    Ok((status, bytes.to_vec()))
}

/// The headers of one credential set. A secret that is missing is an error, not a request sent
/// without it.
pub(crate) fn auth_headers(
    id: &str,
    auth: &Auth<String>,
    fallback_header: &str,
) -> Result<Headers, EffectError> {
    let missing = |field: &str| {
        EffectError::new(
            "missing_credentials",
            format!("connection '{id}' has no {field}: set its credentials"),
        )
    };
    let pairs: Vec<(&str, String)> = match auth {
        Auth::ApiKey { header, key } => {
            let name = if header.trim().is_empty() {
                fallback_header
            } else {
                header.as_str()
            };
            vec![(name.trim(), key.clone().ok_or_else(|| missing("key"))?)]
        }
        Auth::Basic { username, password } => {
            let user = username.as_deref().ok_or_else(|| missing("username"))?;
            let pass = password.as_deref().ok_or_else(|| missing("password"))?;
            vec![(
                AUTHORIZATION.as_str(),
                format!("Basic {}", B64.encode(format!("{user}:{pass}"))),
            )]
        }
        Auth::Bearer { token } => {
            let token = token.as_deref().ok_or_else(|| missing("token"))?;
            vec![(AUTHORIZATION.as_str(), format!("Bearer {token}"))]
        }
        Auth::KeyValue { pairs } => pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect(),
    };
    pairs
        .into_iter()
        .map(|(name, value)| {
            let invalid = |what: &str| {
                EffectError::new(
                    "invalid_credentials",
                    format!("connection '{id}': {what} for header '{name}'"),
                )
            };
            let name_ok = HeaderName::try_from(name).map_err(|_| invalid("an invalid name"))?;
            let mut value_ok =
                HeaderValue::try_from(value).map_err(|_| invalid("an invalid value"))?;
            value_ok.set_sensitive(true);
            Ok((name_ok, value_ok))
        })
        .collect()
}

/// JSON if it parses, else the text; `null` for an empty body.
fn parse_body(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use events::connection::admit_member_auth;
    use events::spec::Tool;

    use super::super::loopback::{recv, serve};
    use super::*;

    const AGENT: Uuid = Uuid::from_u128(0xa6e);

    fn cipher() -> Arc<Cipher> {
        Arc::new(Cipher::from_key(&[9; 32]))
    }

    fn connection(
        id: &str,
        server: &str,
        credentials: CredentialMode,
        auth: Value,
        c: &Cipher,
    ) -> Connection<Sealed> {
        Connection::<String> {
            id: id.into(),
            display_name: String::new(),
            server: server.into(),
            sso: false,
            credentials,
            auth: serde_json::from_value(auth).expect("auth parses"),
            environments: None,
            check_path: None,
        }
        .admit(AGENT, c)
        .expect("admitted")
    }

    fn effects(connections: Vec<Connection<Sealed>>, cipher: Arc<Cipher>) -> HttpEffects {
        let spec = serde_json::from_value(json!({"name": "t"})).expect("spec");
        HttpEffects {
            agent_id: AGENT,
            snapshot: Arc::new(Snapshot {
                spec,
                endpoint: Default::default(),
                connections,
            }),
            current: Arc::new(AgentState::new(AGENT)),
            environment: Environment::Live,
            member: None,
            cipher,
            agent: Rc::new(|agent, input| {
                async move { Ok(json!({"agent": agent.to_string(), "input": input})) }.boxed_local()
            }),
            progress: None,
        }
    }

    /// Stores `auth` as `member`'s draft credentials for `connection` in the agent as it is now.
    fn set_member(
        fx: &mut HttpEffects,
        connection: &Connection<Sealed>,
        member: &str,
        auth: Auth<Sealed>,
    ) {
        Arc::make_mut(&mut fx.current)
            .connections
            .entry(connection.id.clone())
            .or_insert_with(|| events::state::ConnectionState::new(connection.clone()))
            .members
            .insert(member.into(), auth);
    }

    fn tool(connection: &str, method: &str, path: &str, body: Option<Value>) -> Tool {
        Tool {
            name: "t".into(),
            connection: connection.into(),
            security: String::new(),
            method: method.into(),
            path: path.into(),
            body,
            description: None,
            parameters: None,
            approval: false,
        }
    }

    async fn call(
        fx: &HttpEffects,
        tool: &Tool,
        path: &str,
        body: Option<Value>,
    ) -> Result<ToolResponse, EffectError> {
        fx.tool(ToolCall {
            tool,
            path: path.into(),
            body,
        })
        .await
    }

    #[actix_rt::test]
    async fn each_team_auth_type_sends_its_headers() {
        let (base, rx) = serve(vec![
            (200, r#"{"ok":true}"#),
            (201, "plain text"),
            (204, ""),
            (302, ""),
        ]);
        let c = cipher();
        let fx = effects(
            vec![
                connection(
                    "k",
                    &base,
                    CredentialMode::Team,
                    json!({"type": "api_key", "header": "X-Api-Key", "key": "k3y"}),
                    &c,
                ),
                connection(
                    "b",
                    &base,
                    CredentialMode::Team,
                    json!({"type": "basic", "username": "ada", "password": "pw"}),
                    &c,
                ),
                connection(
                    "t",
                    &base,
                    CredentialMode::Team,
                    json!({"type": "bearer", "token": "t0k"}),
                    &c,
                ),
                connection(
                    "kv",
                    &base,
                    CredentialMode::Team,
                    json!({"type": "key_value", "pairs": {"X-One": "1", "X-Two": "2"}}),
                    &c,
                ),
            ],
            c,
        );
        let post = tool("k", "post", "/f?city={{ args.city }}", None);
        let got = call(&fx, &post, "/f?city=Oslo", Some(json!({"days": 3})))
            .await
            .unwrap();
        assert_eq!(
            got,
            ToolResponse {
                status: 200,
                body: json!({"ok": true})
            }
        );
        let seen = recv(&rx);
        assert_eq!(seen.line, "POST /f?city=Oslo HTTP/1.1");
        assert_eq!(seen.headers["x-api-key"], "k3y");
        assert_eq!(seen.headers["content-type"], "application/json");
        assert_eq!(
            serde_json::from_str::<Value>(&seen.body).unwrap(),
            json!({"days": 3})
        );

        let got = call(&fx, &tool("b", "GET", "", None), "/b", None)
            .await
            .unwrap();
        assert_eq!(
            got,
            ToolResponse {
                status: 201,
                body: json!("plain text")
            }
        );
        assert_eq!(
            recv(&rx).headers["authorization"],
            format!("Basic {}", B64.encode("ada:pw"))
        );

        let got = call(&fx, &tool("t", "GET", "", None), "b", None)
            .await
            .unwrap();
        assert_eq!(
            got,
            ToolResponse {
                status: 204,
                body: Value::Null
            }
        );
        let seen = recv(&rx);
        assert_eq!(seen.line, "GET /b HTTP/1.1");
        assert_eq!(seen.headers["authorization"], "Bearer t0k");

        // Redirects come back as they are, never followed with the credentials.
        let got = call(&fx, &tool("kv", "DELETE", "", None), "/kv", None)
            .await
            .unwrap();
        assert_eq!(got.status, 302);
        let seen = recv(&rx);
        assert_eq!(seen.line, "DELETE /kv HTTP/1.1");
        assert_eq!(
            (
                seen.headers["x-one"].as_str(),
                seen.headers["x-two"].as_str()
            ),
            ("1", "2")
        );
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "no second request"
        );
    }

    #[actix_rt::test]
    async fn member_connections_use_the_callers_own_credentials() {
        let (base, rx) = serve(vec![(200, "{}"), (200, "{}")]);
        let c = cipher();
        let conn = connection(
            "m",
            &base,
            CredentialMode::Member,
            json!({"type": "api_key", "header": "X-Key"}),
            &c,
        );
        let mut fx = effects(vec![conn.clone()], c.clone());
        for (member, key) in [("alice", "a-key"), ("bob", "b-key")] {
            let auth = serde_json::from_value(json!({"type": "api_key", "key": key})).unwrap();
            let sealed = admit_member_auth(AGENT, &conn, member, Environment::Draft, &auth, &c)
                .expect("member auth");
            set_member(&mut fx, &conn, member, sealed);
        }
        let t = tool("m", "GET", "", None);
        for (member, key) in [("alice", "a-key"), ("bob", "b-key")] {
            fx.member = Some(member.into());
            assert_eq!(call(&fx, &t, "/x", None).await.unwrap().status, 200);
            assert_eq!(recv(&rx).headers["x-key"], key);
        }
        fx.member = Some("carol".into());
        let err = call(&fx, &t, "/x", None).await.unwrap_err();
        assert_eq!(err.code, "missing_member_credentials");
        assert!(
            err.message.contains("carol") && err.message.contains("'m'"),
            "{err}"
        );
        fx.member = None;
        let err = call(&fx, &t, "/x", None).await.unwrap_err();
        assert_eq!(err.code, "missing_member_credentials");
        assert!(err.message.contains("X-Hangar-Member"), "{err}");
    }

    /// A team connection with live credentials, as `admit` stores it.
    fn with_live(
        id: &str,
        server: &str,
        draft: &str,
        live: &str,
        c: &Cipher,
    ) -> Connection<Sealed> {
        Connection::<String> {
            id: id.into(),
            display_name: String::new(),
            server: server.into(),
            sso: false,
            credentials: CredentialMode::Team,
            auth: serde_json::from_value(json!({"type": "bearer", "token": draft}))
                .expect("auth parses"),
            environments: Some(
                serde_json::from_value(
                    json!({"live": {"auth": {"type": "bearer", "token": live}}}),
                )
                .expect("environments parse"),
            ),
            check_path: None,
        }
        .admit(AGENT, c)
        .expect("admitted")
    }

    /// Calls `t` and answers the `Authorization` the server saw.
    async fn sent_token(
        fx: &HttpEffects,
        t: &Tool,
        rx: &std::sync::mpsc::Receiver<super::super::loopback::Seen>,
    ) -> String {
        assert_eq!(call(fx, t, "/x", None).await.expect("answered").status, 200);
        recv(rx).headers["authorization"].clone()
    }

    #[actix_rt::test]
    async fn live_runs_send_the_current_live_credentials_and_previews_the_draft_ones() {
        let (base, rx) = serve(vec![(200, "{}"); 5]);
        let c = cipher();
        let version = with_live("svc", &base, "draft-t", "live-deployed", &c);
        let mut fx = effects(vec![version.clone()], c.clone());
        let t = tool("svc", "GET", "", None);
        // The version's own live credentials while the agent has no newer ones.
        assert_eq!(sent_token(&fx, &t, &rx).await, "Bearer live-deployed");
        // The connection's live credentials as they stand now, for the same server.
        let now = with_live("svc", &base, "draft-2", "live-now", &c);
        Arc::make_mut(&mut fx.current)
            .connections
            .insert("svc".into(), events::state::ConnectionState::new(now));
        assert_eq!(sent_token(&fx, &t, &rx).await, "Bearer live-now");
        // Moved to another server since: the version keeps what it was deployed with.
        let moved = with_live("svc", "https://elsewhere.example", "d", "live-moved", &c);
        Arc::make_mut(&mut fx.current)
            .connections
            .insert("svc".into(), events::state::ConnectionState::new(moved));
        assert_eq!(sent_token(&fx, &t, &rx).await, "Bearer live-deployed");
        // A preview sends the version's draft credentials, whatever live ones exist.
        fx.environment = Environment::Draft;
        assert_eq!(sent_token(&fx, &t, &rx).await, "Bearer draft-t");
        // Without live credentials a live run sends `auth`, as before environments.
        let plain = connection(
            "svc",
            &base,
            CredentialMode::Team,
            json!({"type": "bearer", "token": "only-t"}),
            &c,
        );
        let mut fx = effects(vec![plain], c.clone());
        fx.environment = Environment::Live;
        assert_eq!(sent_token(&fx, &t, &rx).await, "Bearer only-t");
    }

    /// Sealed credentials copied to another place in the log (by someone who can rewrite and
    /// re-hash it) do not open there, so nothing is sent: a member's to another member, a
    /// connection's to a connection on another server, any to another agent.
    #[actix_rt::test]
    async fn moved_credentials_do_not_open_and_nothing_is_sent() {
        let (base, rx) = serve(vec![(200, "{}")]);
        let c = cipher();
        let home = connection(
            "home",
            "https://api.example.com",
            CredentialMode::Team,
            json!({"type": "bearer", "token": "home-token"}),
            &c,
        );
        let mut trap = connection(
            "trap",
            &base,
            CredentialMode::Team,
            json!({"type": "bearer", "token": "own-token"}),
            &c,
        );
        trap.auth = home.auth.clone();
        let fx = effects(vec![trap], c.clone());
        let err = call(&fx, &tool("trap", "GET", "", None), "/x", None)
            .await
            .unwrap_err();
        assert_eq!(err.code, "credentials_unreadable", "{err}");
        assert!(!err.message.contains("home-token"), "{err}");

        let own = connection(
            "own",
            &base,
            CredentialMode::Team,
            json!({"type": "bearer", "token": "own-token"}),
            &c,
        );
        let mut other_agent = effects(vec![own], c.clone());
        other_agent.agent_id = Uuid::from_u128(0xbad);
        let err = call(&other_agent, &tool("own", "GET", "", None), "/x", None)
            .await
            .unwrap_err();
        assert_eq!(err.code, "credentials_unreadable", "{err}");

        let m = connection(
            "m",
            &base,
            CredentialMode::Member,
            json!({"type": "bearer"}),
            &c,
        );
        let auth = serde_json::from_value(json!({"type": "bearer", "token": "alice-token"}))
            .expect("auth parses");
        let alices = admit_member_auth(AGENT, &m, "alice", Environment::Draft, &auth, &c)
            .expect("member auth");
        let mut fx = effects(vec![m.clone()], c.clone());
        set_member(&mut fx, &m, "mallory", alices);
        fx.member = Some("mallory".into());
        let err = call(&fx, &tool("m", "GET", "", None), "/x", None)
            .await
            .unwrap_err();
        assert_eq!(err.code, "credentials_unreadable", "{err}");
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "nothing was sent"
        );
    }

    #[actix_rt::test]
    async fn unreachable_tools_and_unknown_connections_fail_with_codes() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = cipher();
        let server = format!("http://127.0.0.1:{port}");
        let auth = json!({"type": "bearer", "token": "s3cret-t0ken"});
        let fx = effects(
            vec![connection("down", &server, CredentialMode::Team, auth, &c)],
            c,
        );
        let err = call(&fx, &tool("down", "GET", "", None), "/", None)
            .await
            .unwrap_err();
        assert_eq!(err.code, "tool_unreachable");
        assert!(
            err.message.contains(&server) && !err.message.contains("s3cret"),
            "{err}"
        );
        let err = call(&fx, &tool("gone", "GET", "", None), "/", None)
            .await
            .unwrap_err();
        assert_eq!(err.code, "unknown_connection");
    }

    /// With loopback refused, a tool or model call to a listening loopback server is refused
    /// before it connects, as `egress_denied`, not as an unreachable server.
    #[actix_rt::test]
    async fn calls_the_egress_policy_refuses_are_egress_denied() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!(
            "http://127.0.0.1:{}/x",
            listener.local_addr().unwrap().port()
        );
        let strict = build_client_with(egress::connector_with(Arc::new(egress::Policy {
            allow_loopback: false,
            ..egress::Policy::default()
        })));
        let Err(refused) = send(&strict, Method::GET, &url, Vec::new(), None).await else {
            panic!("sent");
        };
        let err = refused.into_effect_error(
            |why| EffectError::new("tool_unreachable", why),
            "tool 't' at http://127.0.0.1",
        );
        assert_eq!(err.code, "egress_denied");
        assert!(
            err.message.contains("tool 't'")
                && err.message.contains("HANGAR_EGRESS_ALLOW_LOOPBACK"),
            "{err}"
        );
        assert!(listener.accept().is_err(), "nothing connected");
    }

    /// HTTPS is compiled in: a server that hangs up during the handshake is unreachable, not
    /// "SSL is not supported".
    #[actix_rt::test]
    async fn https_is_supported() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || drop(listener.accept()));
        let c = cipher();
        let server = format!("https://127.0.0.1:{port}");
        let auth = json!({"type": "bearer", "token": "t"});
        let fx = effects(
            vec![connection("tls", &server, CredentialMode::Team, auth, &c)],
            c,
        );
        let err = call(&fx, &tool("tls", "GET", "", None), "/", None)
            .await
            .unwrap_err();
        assert_eq!(err.code, "tool_unreachable");
        assert!(
            !err.message.to_lowercase().contains("not supported"),
            "{err}"
        );
    }

    #[actix_rt::test]
    async fn openai_models_are_called_and_their_reply_parsed() {
        let reply = r#"{"choices": [{"message": {"role": "assistant", "content": "Hi there"}}]}"#;
        let (base, rx) = serve(vec![
            (200, reply),
            (500, "boom"),
            (200, r#"{"choices": []}"#),
        ]);
        let c = cipher();
        let fx = effects(
            vec![connection(
                "llm",
                &base,
                CredentialMode::Team,
                json!({"type": "bearer", "token": "sk"}),
                &c,
            )],
            c,
        );
        let model = Model {
            provider: "openai".into(),
            name: "gpt-x".into(),
            timeout_s: None,
            base_url: Some(format!("{base}/v1/")),
            connection: Some("llm".into()),
        };
        assert_eq!(
            fx.model(&model, "Be brief.", "Hello?").await.unwrap(),
            "Hi there"
        );
        let seen = recv(&rx);
        assert_eq!(seen.line, "POST /v1/chat/completions HTTP/1.1");
        assert_eq!(seen.headers["authorization"], "Bearer sk");
        assert_eq!(
            serde_json::from_str::<Value>(&seen.body).unwrap(),
            json!({"model": "gpt-x", "messages": [
                {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]})
        );
        let err = fx.model(&model, "s", "p").await.unwrap_err();
        assert_eq!(err.code, "model_failed");
        assert!(
            err.message.contains("500") && err.message.contains("boom"),
            "{err}"
        );
        let err = fx.model(&model, "s", "p").await.unwrap_err();
        assert_eq!(err.code, "model_failed");
        let no_url = Model {
            base_url: None,
            ..model
        };
        assert_eq!(
            fx.model(&no_url, "s", "p").await.unwrap_err().code,
            "model_failed"
        );
    }

    /// A draft (previewed unvalidated) that points the model at another host while naming a
    /// connection: the call is refused before any request, so the credentials stay home.
    #[actix_rt::test]
    async fn a_model_off_its_connections_origin_gets_no_credentials() {
        let (elsewhere, rx) = serve(vec![(200, "{}")]);
        let c = cipher();
        let fx = effects(
            vec![connection(
                "llm",
                "https://llm.example.com",
                CredentialMode::Team,
                json!({"type": "bearer", "token": "sk-stay-home"}),
                &c,
            )],
            c,
        );
        let model = Model {
            provider: "openai".into(),
            name: "gpt-x".into(),
            timeout_s: None,
            base_url: Some(format!("{elsewhere}/v1")),
            connection: Some("llm".into()),
        };
        let err = fx.model(&model, "s", "p").await.unwrap_err();
        assert_eq!(err.code, "connection_origin_mismatch");
        assert!(
            err.message.contains("'llm'") && !err.message.contains("sk-stay-home"),
            "{err}"
        );
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "no request was sent"
        );
    }

    /// A run with no time limit waits for a slow tool: the client puts no cap of its own on a
    /// call. The clock is paused, and a paused clock jumps to the next timer whenever the
    /// runtime waits on the network only, so any client timeout (the 900 s cap there once was)
    /// would fire at once, long before the real 300 ms the server takes.
    #[actix_rt::test]
    async fn a_call_with_no_deadline_has_no_client_cap() {
        tokio::time::pause();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match std::io::Read::read(&mut stream, &mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => return,
                }
            }
            std::thread::sleep(Duration::from_millis(300));
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"late\":1}\n",
            );
        });
        let c = cipher();
        let auth = json!({"type": "bearer", "token": "t"});
        let fx = effects(
            vec![connection("slow", &server, CredentialMode::Team, auth, &c)],
            c,
        );
        let got = call(&fx, &tool("slow", "GET", "", None), "/", None).await;
        assert_eq!(
            got.map(|r| r.body),
            Ok(json!({"late": 1})),
            "the call waited for the answer"
        );
    }

    #[actix_rt::test]
    async fn collaborators_go_through_the_callback() {
        let fx = effects(Vec::new(), cipher());
        let id = Uuid::now_v7();
        let out = fx.agent(id, json!({"q": 1})).await.unwrap();
        assert_eq!(out, json!({"agent": id.to_string(), "input": {"q": 1}}));
    }
}
