//! Writes the fixtures of the schema version this build writes, through the real command path
//! (`decide`, then `Envelope::seal`), with fixed agent ids, times and sealing key.
//!
//! Run it once per schema version, when `events::event::SCHEMA` is bumped, or when a fixture is
//! added for a kind that joined the current schema:
//! `cargo test -p events --test compat -- --ignored --exact generate::schema_fixtures`.
//! It writes only the files that are missing and never touches one that exists: a fixture is what
//! an older build wrote, so it is never regenerated — a new schema gets a new directory beside
//! the old ones.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use events::check::{CheckOutcome, CheckStatus};
use events::command::{decide, Command, Context};
use events::connection::{Auth, Connection, Environment};
use events::endpoint::EndpointInput;
use events::envelope::GENESIS_HASH;
use events::secret::Cipher;
use events::spec::AgentSpec;
use events::validation::{Collaborator, Directory};
use events::{AgentState, Envelope, NewEvent};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{fixture_dir, secret, CHECKS, FIXTURE_KEY, KEYS, LIFECYCLE, MEMBERS, STOPPED};

struct NoAgents;

impl Directory for NoAgents {
    fn collaborator(&self, _id: Uuid) -> Option<Collaborator> {
        None
    }
}

/// One agent's log being written: each accepted command is sealed one minute after the last.
struct Writer {
    state: AgentState,
    prev_hash: String,
    start: DateTime<Utc>,
    lines: Vec<u8>,
    cipher: Cipher,
    /// What the commands showed the client once (signing secrets, invocation keys): the log
    /// must hold none of it.
    revealed: Vec<String>,
}

impl Writer {
    fn new(agent: Uuid, start: DateTime<Utc>) -> Self {
        Writer {
            state: AgentState::new(agent),
            prev_hash: GENESIS_HASH.to_owned(),
            start,
            lines: Vec::new(),
            cipher: Cipher::from_key(&FIXTURE_KEY),
            revealed: Vec::new(),
        }
    }

    #[track_caller]
    fn run(&mut self, command: Command) -> &mut Self {
        let ctx = Context {
            cipher: &self.cipher,
            directory: &NoAgents,
        };
        let decision = decide(&self.state, &command, &ctx).expect("command accepted");
        self.revealed.extend(decision.revealed_secret);
        for event in decision.events {
            let seq = self.state.seq + 1;
            let at = self.start + Duration::minutes(seq as i64);
            let ts = uuid::Timestamp::from_unix(
                uuid::NoContext,
                at.timestamp() as u64,
                at.timestamp_subsec_nanos(),
            );
            let new = NewEvent {
                id: Uuid::new_v7(ts),
                at,
                event,
            };
            let (env, bytes) =
                Envelope::seal(self.state.id, seq, &self.prev_hash, &new).expect("seals");
            self.state.apply(&env);
            self.prev_hash = env.hash;
            self.lines.extend_from_slice(&bytes);
            self.lines.push(b'\n');
        }
        self
    }

    /// Writes the log as `dir/name` unless that file exists (fixtures are never rewritten).
    fn write(&self, dir: &Path, name: &str) {
        let text = String::from_utf8_lossy(&self.lines);
        for shown in &self.revealed {
            assert!(!text.contains(shown.as_str()), "{name} holds {shown}");
        }
        std::fs::create_dir_all(dir).expect("fixture directory");
        let path = dir.join(name);
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                eprintln!("{} exists: kept as it is", path.display());
                return;
            }
            Err(e) => panic!("{}: {e}", path.display()),
        };
        file.write_all(&self.lines).expect("written");
        eprintln!("{} written", path.display());
    }
}

fn spec(v: Value) -> AgentSpec {
    serde_json::from_value(v).expect("spec parses")
}

fn weather_spec(description: &str) -> AgentSpec {
    spec(json!({
      "name": "Weather helper", "description": description,
      "model": {"provider": "echo", "name": "echo-1", "timeout_s": 30},
      "instructions": "You answer briefly.",
      "knowledge": [{"name": "faq.md", "content": "Rain is wet."}],
      "tools": [{"name": "forecast", "connection": "weather", "security": "api_key",
                 "method": "GET", "path": "/forecast?city={{ args.city }}"}],
      "flow": {"start": "greet", "nodes": [
        {"id": "greet", "type": "transform", "output": {"text": "Hello {{ input.name }}"}, "next": "sky"},
        {"id": "sky", "type": "tool", "tool": "forecast", "args": {"city": "{{ input.city }}"},
         "timeout_s": 20, "next": "done"},
        {"id": "done", "type": "end", "output": {"greeting": "{{ nodes.greet.text }}",
                                                 "forecast": "{{ nodes.sky.body }}"}}
      ]}
    }))
}

/// The weather spec with a second tool over the member connection `crm`.
fn weather_and_crm_spec() -> AgentSpec {
    let mut v = serde_json::to_value(weather_spec("Answers weather questions")).expect("json");
    v["tools"].as_array_mut().expect("tools").push(json!({
        "name": "lookup", "connection": "crm", "security": "bearer",
        "method": "POST", "path": "/people", "body": {"name": "{{ args.name }}"}}));
    v["flow"]["nodes"][1]["next"] = json!("who");
    v["flow"]["nodes"]
        .as_array_mut()
        .expect("nodes")
        .push(json!({
        "id": "who", "type": "tool", "tool": "lookup", "args": {"name": "{{ input.name }}"},
        "next": "done"}));
    spec(v)
}

fn connection(v: Value) -> Connection<String> {
    serde_json::from_value(v).expect("connection parses")
}

fn auth(v: Value) -> Auth<String> {
    serde_json::from_value(v).expect("auth parses")
}

fn endpoint(v: Value) -> Command {
    let input: EndpointInput = serde_json::from_value(v).expect("endpoint parses");
    Command::ConfigureEndpoint { input }
}

fn weather(key: &str) -> Connection<String> {
    connection(json!({"id": "weather", "display_name": "Weather API",
        "server": "https://api.weather.example.com/", "credentials": "team",
        "auth": {"type": "api_key", "header": "X-Api-Key", "key": key}}))
}

/// Every event kind, in the order a team meets them: edit, connect, push, deploy, redeploy,
/// rotate, roll back, stop, clean up, deploy again.
fn lifecycle() -> Writer {
    let start = Utc.with_ymd_and_hms(2025, 1, 15, 9, 0, 0).unwrap();
    let mut w = Writer::new(LIFECYCLE, start);
    w.run(Command::Create {
        spec: spec(json!({"name": "Weather helper"})),
    })
    .run(Command::EditDraft {
        spec: weather_spec("Answers weather questions"),
    })
    .run(Command::AddConnection {
        connection: weather(secret("weather-key-v1")),
    })
    .run(endpoint(
        json!({"sync_timeout_s": 120, "max_concurrency": 16,
        "async": {"push_enabled": true, "url": "https://hooks.example.com/hangar",
                  "token": secret("push-token"), "timeout_s": 300}}),
    ))
    .run(Command::Deploy { version: None })
    .run(Command::UpdateConnection {
        id: "weather".into(),
        connection: weather(secret("weather-key-v2")),
    })
    .run(Command::AddConnection {
        connection: connection(json!({"id": "crm", "server": "https://crm.example.com",
            "credentials": "member", "auth": {"type": "bearer"}})),
    })
    .run(Command::SetMemberCredential {
        connection: "crm".into(),
        member: "alice@example.com".into(),
        environment: Environment::Draft,
        auth: auth(json!({"type": "bearer", "token": secret("alice-token")})),
    })
    .run(Command::EditDraft {
        spec: weather_and_crm_spec(),
    })
    .run(Command::Deploy { version: None })
    .run(Command::RotateSigningSecret)
    .run(Command::Deploy { version: Some(1) })
    .run(Command::Undeploy)
    .run(Command::RemoveConnection { id: "crm".into() })
    .run(Command::EditDraft {
        spec: weather_spec("Answers weather questions for any city"),
    })
    .run(Command::Deploy { version: None });
    w
}

/// An agent without connections that was deployed, redeployed and stopped: back to draft.
fn stopped() -> Writer {
    let start = Utc.with_ymd_and_hms(2025, 2, 3, 14, 30, 0).unwrap();
    let mut w = Writer::new(STOPPED, start);
    let greeter = |instructions: &str| {
        spec(json!({
          "name": "Greeter", "description": "Says hello",
          "model": {"provider": "echo", "name": "echo-1"},
          "voice": {"style": "warm"},
          "instructions": instructions,
          "flow": {"start": "hi", "nodes": [
            {"id": "hi", "type": "model", "prompt": "Greet {{ input.name }}", "next": "check"},
            {"id": "check", "type": "condition",
             "branches": [{"when": "input.formal", "next": "formal"}], "else": "done"},
            {"id": "formal", "type": "transform", "output": {"text": "Good day."}, "next": "done"},
            {"id": "done", "type": "end", "output": "{{ nodes.hi.text }}"}
          ]}
        }))
    };
    w.run(Command::Create {
        spec: greeter("Be kind."),
    })
    .run(endpoint(
        json!({"max_concurrency": 4, "async": {"timeout_s": null}}),
    ))
    .run(Command::Deploy { version: None })
    .run(Command::EditDraft {
        spec: greeter("Be kind and brief."),
    })
    .run(Command::Deploy { version: None })
    .run(Command::Undeploy);
    w
}

/// Member credentials across an auth type change, and the other team auth types.
fn members() -> Writer {
    let start = Utc.with_ymd_and_hms(2025, 3, 20, 8, 0, 0).unwrap();
    let mut w = Writer::new(MEMBERS, start);
    let crm = |auth: Value| {
        connection(
            json!({"id": "crm", "display_name": "CRM", "server": "https://crm.example.com",
            "credentials": "member", "auth": auth}),
        )
    };
    w.run(Command::Create {
        spec: spec(json!({"name": "CRM desk", "description": "Looks people up"})),
    })
    .run(Command::AddConnection {
        connection: crm(json!({"type": "api_key", "header": "X-Crm-Key"})),
    })
    .run(Command::SetMemberCredential {
        connection: "crm".into(),
        member: "alice".into(),
        environment: Environment::Draft,
        auth: auth(json!({"type": "api_key", "key": secret("alice-crm-key")})),
    })
    .run(Command::SetMemberCredential {
        connection: "crm".into(),
        member: "bob".into(),
        environment: Environment::Draft,
        auth: auth(json!({"type": "api_key", "key": secret("bob-crm-key")})),
    })
    .run(Command::UpdateConnection {
        id: "crm".into(),
        connection: crm(json!({"type": "bearer"})),
    })
    .run(Command::SetMemberCredential {
        connection: "crm".into(),
        member: "alice".into(),
        environment: Environment::Draft,
        auth: auth(json!({"type": "bearer", "token": secret("alice-crm-token")})),
    })
    .run(Command::AddConnection {
        connection: connection(json!({"id": "vault", "server": "https://vault.example.com",
            "auth": {"type": "key_value", "pairs": {"tenant": secret("vault-tenant")}}})),
    })
    .run(Command::AddConnection {
        connection: connection(
            json!({"id": "legacy", "server": "http://legacy.example.com",
            "sso": true, "auth": {"type": "basic", "username": "svc",
                                  "password": secret("legacy-password")}}),
        ),
    })
    .run(Command::RemoveConnection {
        id: "legacy".into(),
    });
    w
}

/// Invocation keys: two issued, the first revoked, a third issued. Only their hashes are stored.
fn keys() -> Writer {
    let start = Utc.with_ymd_and_hms(2025, 4, 7, 10, 0, 0).unwrap();
    let mut w = Writer::new(KEYS, start);
    w.run(Command::Create {
        spec: spec(json!({"name": "Front desk", "description": "Answers visitors"})),
    })
    .run(Command::IssueKey { member: None });
    let first = w.state.keys.keys().next().expect("one key").clone();
    w.run(Command::IssueKey { member: None })
        .run(Command::RevokeKey { id: first })
        .run(Command::IssueKey { member: None });
    w
}

/// A check of the credentials `state` holds now for `connection` (and `member`) in
/// `environment`: what the server answered (`None`: nothing, with `detail` saying why).
fn checked(
    state: &AgentState,
    connection: &str,
    environment: Environment,
    member: Option<&str>,
    http_status: Option<u16>,
    detail: Option<&str>,
) -> Command {
    let stored = &state.connections[connection];
    let (credentials, _) = stored
        .credentials(member, environment)
        .expect("credentials to check");
    Command::RecordConnectionCheck {
        connection: connection.into(),
        environment,
        member: member.map(str::to_owned),
        server: stored.connection.server.clone(),
        credentials: credentials.clone(),
        outcome: CheckOutcome {
            status: http_status.map_or(CheckStatus::Unreachable, CheckStatus::of_answer),
            http_status,
            latency_ms: 87,
            detail: detail.map(str::to_owned),
        },
    }
}

/// Connection checks and live credentials: a team connection with its own live credentials,
/// checked in both environments; a member with draft and live credentials, checked live; the
/// team connection updated (its checks forgotten) and checked again, unreachable.
fn checks() -> Writer {
    let start = Utc.with_ymd_and_hms(2025, 5, 12, 16, 0, 0).unwrap();
    let mut w = Writer::new(CHECKS, start);
    let desk = || {
        connection(json!({"id": "desk", "display_name": "Help desk API",
            "server": "https://desk.example.com", "check_path": "/api/me",
            "auth": {"type": "bearer", "token": secret("desk-draft-token")},
            "environments": {"live": {"auth": {"type": "bearer",
                                               "token": secret("desk-live-token")}}}}))
    };
    w.run(Command::Create {
        spec: spec(json!({"name": "Help desk", "description": "Opens tickets"})),
    })
    .run(Command::AddConnection { connection: desk() });
    let check = checked(&w.state, "desk", Environment::Draft, None, Some(401), None);
    w.run(check);
    let check = checked(&w.state, "desk", Environment::Live, None, Some(200), None);
    w.run(check)
        .run(Command::AddConnection {
            connection: connection(json!({"id": "crm", "server": "https://crm.example.com",
            "credentials": "member", "auth": {"type": "bearer"}})),
        })
        .run(Command::SetMemberCredential {
            connection: "crm".into(),
            member: "carol".into(),
            environment: Environment::Draft,
            auth: auth(json!({"type": "bearer", "token": secret("carol-draft-token")})),
        })
        .run(Command::SetMemberCredential {
            connection: "crm".into(),
            member: "carol".into(),
            environment: Environment::Live,
            auth: auth(json!({"type": "bearer", "token": secret("carol-live-token")})),
        });
    let check = checked(
        &w.state,
        "crm",
        Environment::Live,
        Some("carol"),
        Some(204),
        None,
    );
    w.run(check).run(Command::UpdateConnection {
        id: "desk".into(),
        connection: desk(),
    });
    let unreachable = Some("no answer from https://desk.example.com within 10 s");
    let check = checked(
        &w.state,
        "desk",
        Environment::Draft,
        None,
        None,
        unreachable,
    );
    w.run(check);
    w
}

#[test]
#[ignore = "writes the missing fixtures of the current schema version; run by hand"]
fn schema_fixtures() {
    let dir = fixture_dir(events::event::SCHEMA);
    lifecycle().write(&dir, "lifecycle.jsonl");
    stopped().write(&dir, "stopped.jsonl");
    members().write(&dir, "members.jsonl");
    keys().write(&dir, "keys.jsonl");
    checks().write(&dir, "checks.jsonl");
}
