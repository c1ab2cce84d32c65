//! Compatibility: event logs written by earlier builds still verify and replay.
//!
//! Guards against a change to an event type, the envelope or the hash chain that would leave the
//! logs already on disk unreadable, or readable into a different agent. `tests/fixtures/schema-vN/`
//! holds logs written once by a build of schema N (see `compat/generate.rs`), byte for byte as
//! `Envelope::seal` stored them, one envelope a line. They are never regenerated: when the schema
//! changes, a new directory joins them and every old one must keep passing.

use std::collections::BTreeSet;
use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use events::check::{status, CheckStatus, ConnectionStatus};
use events::connection::{Auth, Connection, CredentialMode, Environment};
use events::envelope::GENESIS_HASH;
use events::secret::{Cipher, Place, Sealed};
use events::state::Status;
use events::{AgentState, Envelope, Event, NewEvent};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

#[path = "compat/generate.rs"]
mod generate;

/// The key every fixture's secrets were sealed with. A test key, never a server's.
const FIXTURE_KEY: [u8; 32] = *b"hangar-schema-v1-fixture-key-32b";

const LIFECYCLE: Uuid = Uuid::from_u128(0x0194_6a1b_2c00_7000_8000_0000_0000_0001);
const STOPPED: Uuid = Uuid::from_u128(0x0194_6a1b_2c00_7000_8000_0000_0000_0002);
const MEMBERS: Uuid = Uuid::from_u128(0x0194_6a1b_2c00_7000_8000_0000_0000_0003);
const KEYS: Uuid = Uuid::from_u128(0x0194_6a1b_2c00_7000_8000_0000_0000_0004);
const CHECKS: Uuid = Uuid::from_u128(0x0194_6a1b_2c00_7000_8000_0000_0000_0005);

/// Every fixture file: (schema, file, the agent whose log it is). A file in `fixtures/` that is
/// not listed here fails `every_fixture_verifies_and_holds_no_plaintext_secret`.
const FIXTURES: &[(u32, &str, Uuid)] = &[
    (1, "lifecycle.jsonl", LIFECYCLE),
    (1, "stopped.jsonl", STOPPED),
    (1, "members.jsonl", MEMBERS),
    (1, "keys.jsonl", KEYS),
    (1, "checks.jsonl", CHECKS),
];

/// Every plaintext secret the fixtures were written with, by name. None may appear in a fixture.
const SECRETS: &[(&str, &str)] = &[
    ("weather-key-v1", "fixture-weather-key-v1-0c41e7"),
    ("weather-key-v2", "fixture-weather-key-v2-93d2a8"),
    ("push-token", "fixture-push-token-5b7f10"),
    ("alice-token", "fixture-alice-token-e2c9d4"),
    ("alice-crm-key", "fixture-alice-crm-key-71a3f0"),
    ("bob-crm-key", "fixture-bob-crm-key-4d8e26"),
    ("alice-crm-token", "fixture-alice-crm-token-a60b5c"),
    ("vault-tenant", "fixture-vault-tenant-38f7e1"),
    ("legacy-password", "fixture-legacy-password-c9150d"),
    ("desk-draft-token", "fixture-desk-draft-token-5e02b7"),
    ("desk-live-token", "fixture-desk-live-token-c31f98"),
    ("carol-draft-token", "fixture-carol-draft-token-84d6a0"),
    ("carol-live-token", "fixture-carol-live-token-1b7e3c"),
];

fn secret(name: &str) -> &'static str {
    SECRETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .unwrap_or_else(|| panic!("no fixture secret named {name}"))
}

fn fixture_dir(schema: u32) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("schema-v{schema}"))
}

/// A fixture log, read and checked link by link.
struct Log {
    name: String,
    text: String,
    lines: Vec<Vec<u8>>,
    envelopes: Vec<Envelope>,
}

impl Log {
    #[track_caller]
    fn open(schema: u32, file: &str, agent: Uuid) -> Log {
        let path = fixture_dir(schema).join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = format!("schema-v{schema}/{file}");
        let lines: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
        assert!(!lines.is_empty(), "{name} is empty");
        let mut prev = GENESIS_HASH.to_owned();
        let mut envelopes = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let seq = i as u64 + 1;
            let env = Envelope::open_verified(line, agent, seq, &prev)
                .unwrap_or_else(|e| panic!("{name} line {seq}: {e}"));
            assert_eq!(env.schema, schema, "{name} line {seq}");
            prev = env.hash.clone();
            envelopes.push(env);
        }
        Log {
            name,
            text,
            lines,
            envelopes,
        }
    }

    fn state(&self) -> AgentState {
        AgentState::replay(self.envelopes[0].agent_id, &self.envelopes)
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.envelopes.iter().map(|e| e.event.type_name()).collect()
    }
}

fn cipher() -> Cipher {
    Cipher::from_key(&FIXTURE_KEY)
}

/// Opens a secret at `place`, where the runtime looks for it.
fn open(sealed: Option<&Sealed>, place: &Place) -> String {
    cipher()
        .open(sealed.expect("a sealed secret"), place)
        .expect("opens with the fixture key")
}

/// Opens `auth`, the credentials of `connection` of `agent` (with `member`, that member's own),
/// as the runtime does before a call.
fn open_auth(
    agent: Uuid,
    connection: &Connection<Sealed>,
    member: Option<&str>,
    auth: &Auth<Sealed>,
) -> Auth<String> {
    auth.open(&cipher(), |field| connection.place(agent, member, field))
        .expect("opens with the fixture key")
}

fn api_key(header: &str, key: &str) -> Auth<String> {
    Auth::ApiKey {
        header: header.into(),
        key: Some(key.into()),
    }
}

fn bearer(token: &str) -> Auth<String> {
    Auth::Bearer {
        token: Some(token.into()),
    }
}

fn versions(state: &AgentState) -> Vec<(u32, Option<u32>)> {
    state
        .versions
        .iter()
        .map(|v| (v.version, v.rollback_of))
        .collect()
}

fn connection_ids(state: &AgentState) -> Vec<&str> {
    state.connections.keys().map(String::as_str).collect()
}

#[test]
fn v1_lifecycle_replays() {
    let log = Log::open(1, "lifecycle.jsonl", LIFECYCLE);
    assert_eq!(
        log.kinds(),
        [
            "Created",
            "FlowEdited",
            "ConnectionAdded",
            "EndpointConfigured",
            "SigningSecretRotated",
            "Deployed",
            "ConnectionUpdated",
            "ConnectionAdded",
            "MemberCredentialSet",
            "FlowEdited",
            "Redeployed",
            "SigningSecretRotated",
            "Redeployed",
            "Undeployed",
            "ConnectionRemoved",
            "FlowEdited",
            "Deployed",
        ]
    );
    let s = log.state();
    assert_eq!(s.id, LIFECYCLE);
    assert_eq!(s.seq, 17);
    assert_eq!(s.draft.name, "Weather helper");
    assert_eq!(
        s.draft.description,
        "Answers weather questions for any city"
    );
    assert_eq!(s.status, Status::Live);
    assert_eq!(s.live_version, Some(4));
    assert_eq!(
        versions(&s),
        [(1, None), (2, None), (3, Some(1)), (4, None)]
    );
    assert_eq!(connection_ids(&s), ["weather"]);
    assert_eq!(
        s.created_at,
        Some(Utc.with_ymd_and_hms(2025, 1, 15, 9, 1, 0).unwrap())
    );
    assert_eq!(
        s.updated_at,
        Some(Utc.with_ymd_and_hms(2025, 1, 15, 9, 17, 0).unwrap())
    );

    // Each version keeps the seq that made it live and the snapshot it was deployed with.
    let seqs: Vec<u64> = s.versions.iter().map(|v| v.seq).collect();
    assert_eq!(seqs, [6, 11, 13, 17]);
    let v1 = s.version(1).expect("v1");
    let v2 = s.version(2).expect("v2");
    assert_eq!(s.version(3).expect("v3").snapshot, v1.snapshot);
    assert_eq!(v1.snapshot.spec.tools.len(), 1);
    assert_eq!(v2.snapshot.spec.tools.len(), 2);
    let v2_connections: Vec<&str> = v2
        .snapshot
        .connections
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(v2_connections, ["crm", "weather"]);
    let v1_weather = &v1.snapshot.connections[0];
    assert_eq!(
        open_auth(LIFECYCLE, v1_weather, None, &v1_weather.auth),
        api_key("X-Api-Key", secret("weather-key-v1"))
    );

    // The draft's connection is the updated one, secrets sealed with the fixture key.
    let weather = &s.connections["weather"].connection;
    assert_eq!(weather.display_name, "Weather API");
    assert_eq!(weather.server, "https://api.weather.example.com");
    assert_eq!(
        open_auth(LIFECYCLE, weather, None, &weather.auth),
        api_key("X-Api-Key", secret("weather-key-v2"))
    );

    // Push settings and the rotated signing secret.
    assert_eq!(s.endpoint.sync_timeout_s, 120);
    assert_eq!(s.endpoint.max_concurrency, 16);
    let push = &s.endpoint.asynchronous;
    assert!(push.push_enabled);
    assert_eq!(
        push.url.as_deref(),
        Some("https://hooks.example.com/hangar")
    );
    assert_eq!(push.timeout_s, Some(300));
    let push_place = Place::push_token(LIFECYCLE, push.url.as_deref());
    assert_eq!(open(push.token.as_ref(), &push_place), secret("push-token"));
    let signing_place = Place::signing_secret(LIFECYCLE);
    let signing = open(s.signing_secret.as_ref(), &signing_place);
    assert!(signing.starts_with("whsec_"), "{signing}");
    let first_signing = match &log.envelopes[4].event {
        events::Event::SigningSecretRotated(e) => open(Some(&e.secret), &signing_place),
        other => panic!("expected SigningSecretRotated, got {other:?}"),
    };
    assert_ne!(signing, first_signing, "rotated");
}

#[test]
fn v1_stopped_agent_replays_to_draft() {
    let log = Log::open(1, "stopped.jsonl", STOPPED);
    assert_eq!(
        log.kinds(),
        [
            "Created",
            "EndpointConfigured",
            "Deployed",
            "FlowEdited",
            "Redeployed",
            "Undeployed",
        ]
    );
    let s = log.state();
    assert_eq!(s.draft.name, "Greeter");
    assert_eq!(s.draft.instructions, "Be kind and brief.");
    assert_eq!(s.status, Status::Draft);
    assert_eq!(s.live_version, None);
    assert!(s.live().is_none());
    assert_eq!(versions(&s), [(1, None), (2, None)]);
    assert_eq!(
        s.version(1).expect("v1").snapshot.spec.instructions,
        "Be kind."
    );
    assert!(s.connections.is_empty());
    assert!(s.signing_secret.is_none());
    assert_eq!(s.endpoint.max_concurrency, 4);
    assert_eq!(s.endpoint.asynchronous.timeout_s, None, "no time limit");
    assert_eq!(s.next_version(), 3, "versions keep growing after a stop");
}

#[test]
fn v1_member_credentials_replay() {
    let log = Log::open(1, "members.jsonl", MEMBERS);
    let s = log.state();
    assert_eq!(s.draft.name, "CRM desk");
    assert_eq!(s.status, Status::Draft);
    assert!(s.versions.is_empty());
    assert_eq!(connection_ids(&s), ["crm", "vault"]);

    // The switch from api_key to bearer dropped both members; only alice set hers again.
    let crm = &s.connections["crm"];
    assert_eq!(crm.connection.credentials, CredentialMode::Member);
    assert_eq!(crm.connection.auth, Auth::Bearer { token: None });
    let members: Vec<&str> = crm.members.keys().map(String::as_str).collect();
    assert_eq!(members, ["alice"]);
    assert_eq!(
        open_auth(
            MEMBERS,
            &crm.connection,
            Some("alice"),
            &crm.members["alice"]
        ),
        bearer(secret("alice-crm-token"))
    );

    // A Basic-auth username from before usernames were sealed is plaintext in the log; it
    // still loads and opens as itself.
    let events::Event::ConnectionAdded(legacy) = &log.envelopes[7].event else {
        panic!("seq 8 adds the legacy connection");
    };
    assert_eq!(
        open_auth(MEMBERS, &legacy.connection, None, &legacy.connection.auth),
        Auth::Basic {
            username: Some("svc".into()),
            password: Some(secret("legacy-password").into())
        }
    );

    let vault = &s.connections["vault"].connection;
    assert_eq!(vault.credentials, CredentialMode::Team);
    let Auth::KeyValue { pairs } = open_auth(MEMBERS, vault, None, &vault.auth) else {
        panic!("vault uses key_value auth");
    };
    assert_eq!(pairs["tenant"], secret("vault-tenant"));
}

#[test]
fn v1_keys_replay() {
    let log = Log::open(1, "keys.jsonl", KEYS);
    assert_eq!(
        log.kinds(),
        [
            "Created",
            "KeyIssued",
            "KeyIssued",
            "KeyRevoked",
            "KeyIssued"
        ]
    );
    let issued: Vec<(&str, &str, chrono::DateTime<Utc>)> = log
        .envelopes
        .iter()
        .filter_map(|e| match &e.event {
            Event::KeyIssued(k) => Some((k.id.as_str(), k.sha256.as_str(), e.at)),
            _ => None,
        })
        .collect();
    let Event::KeyRevoked(revoked) = &log.envelopes[3].event else {
        panic!("seq 4 is a KeyRevoked");
    };
    assert_eq!(revoked.id, issued[0].0, "the first key was revoked");

    let s = log.state();
    assert_eq!(s.draft.name, "Front desk");
    assert_eq!(s.seq, 5);
    let live: Vec<&str> = s.keys.keys().map(String::as_str).collect();
    let mut expected = vec![issued[1].0, issued[2].0];
    expected.sort();
    assert_eq!(live, expected, "the revoked key is gone");
    for (id, sha256, at) in &issued[1..] {
        let key = &s.keys[*id];
        assert!(id.starts_with("key_"), "{id}");
        assert_eq!(key.sha256, *sha256);
        assert_eq!(key.sha256.len(), 64);
        assert!(key.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(key.created_at, *at);
    }
    assert_eq!(
        s.keys[issued[2].0].created_at,
        Utc.with_ymd_and_hms(2025, 4, 7, 10, 5, 0).unwrap()
    );
}

#[test]
fn v1_checks_replay() {
    let log = Log::open(1, "checks.jsonl", CHECKS);
    assert_eq!(
        log.kinds(),
        [
            "Created",
            "ConnectionAdded",
            "ConnectionChecked",
            "ConnectionChecked",
            "ConnectionAdded",
            "MemberCredentialSet",
            "MemberCredentialSet",
            "ConnectionChecked",
            "ConnectionUpdated",
            "ConnectionChecked",
        ]
    );
    // Draft member credentials are stored as before environments: no `environment` field.
    let draft_member: Value = serde_json::from_slice(&log.lines[5]).expect("json");
    assert!(
        draft_member["data"].get("environment").is_none(),
        "{draft_member}"
    );
    let s = log.state();
    assert_eq!(s.seq, 10);

    let desk = &s.connections["desk"];
    assert_eq!(desk.connection.check_path(), "/api/me");
    let c = &desk.connection;
    assert_eq!(
        open_auth(CHECKS, c, None, &c.auth),
        bearer(secret("desk-draft-token"))
    );
    let live = c.live_auth().expect("live credentials");
    let opened = live
        .open(&cipher(), |f| {
            c.place_in(CHECKS, None, Environment::Live, f)
        })
        .expect("opens at the live place");
    assert_eq!(opened, bearer(secret("desk-live-token")));
    assert!(
        live.open(&cipher(), |f| c.place(CHECKS, None, f)).is_err(),
        "live credentials do not open as draft ones"
    );
    // The update forgot the checks before it; the one after it is unreachable.
    assert_eq!(desk.checks.len(), 1);
    assert_eq!(desk.checks[0].outcome.status, CheckStatus::Unreachable);
    assert_eq!(desk.checks[0].outcome.http_status, None);
    assert_eq!(
        desk.checks[0].checked_at,
        Utc.with_ymd_and_hms(2025, 5, 12, 16, 10, 0).unwrap()
    );
    assert_eq!(status(desk).0, ConnectionStatus::Unreachable);

    let crm = &s.connections["crm"];
    let c = &crm.connection;
    let draft = crm.members["carol"]
        .open(&cipher(), |f| c.place(CHECKS, Some("carol"), f))
        .expect("opens");
    assert_eq!(draft, bearer(secret("carol-draft-token")));
    let live = crm.live_members["carol"]
        .open(&cipher(), |f| {
            c.place_in(CHECKS, Some("carol"), Environment::Live, f)
        })
        .expect("opens");
    assert_eq!(live, bearer(secret("carol-live-token")));
    assert_eq!(crm.checks.len(), 1);
    assert_eq!(crm.checks[0].environment, Environment::Live);
    assert_eq!(crm.checks[0].member.as_deref(), Some("carol"));
    assert_eq!(crm.checks[0].outcome.http_status, Some(204));
    assert_eq!(status(crm).0, ConnectionStatus::Authenticated);
}

/// Every fixture file: verified, and written with no secret in plaintext. A file without
/// expectations above fails here, so a fixture cannot be added without being checked; and every
/// kind in the registry must occur in some fixture, so a new kind needs one.
#[test]
fn every_fixture_verifies_and_holds_no_plaintext_secret() {
    let known: BTreeSet<String> = FIXTURES
        .iter()
        .map(|(schema, file, _)| format!("schema-v{schema}/{file}"))
        .collect();
    let mut found = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    for schema in 1..=events::event::SCHEMA {
        let dir = fixture_dir(schema);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let file = entry.expect("entry").file_name();
            let file = file.to_str().expect("utf-8 name");
            if !file.ends_with(".jsonl") {
                continue;
            }
            let name = format!("schema-v{schema}/{file}");
            let agent = FIXTURES
                .iter()
                .find(|(s, f, _)| *s == schema && *f == file)
                .map(|(_, _, a)| *a)
                .unwrap_or_else(|| panic!("{name} has no expectations in this test"));
            let log = Log::open(schema, file, agent);
            assert_no_plaintext(&log);
            kinds.extend(log.kinds());
            found.insert(name);
        }
    }
    assert_eq!(found, known);
    let missing: Vec<&str> = Event::KINDS
        .iter()
        .copied()
        .filter(|k| !kinds.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "no fixture holds {missing:?}: add one (see compat/generate.rs)"
    );
}

fn assert_no_plaintext(log: &Log) {
    for (_, plain) in SECRETS {
        assert!(!log.text.contains(plain), "{} holds {plain}", log.name);
    }
    // Invocation keys are shown once and stored only as their hash; every key starts so.
    assert!(!log.text.contains("hgk_"), "{} holds a key", log.name);
    // Whatever else was sealed (the generated signing secrets), its plaintext is not there either.
    // Every sealed value is found by its place, and opens there.
    let mut sealed = Vec::new();
    for line in &log.lines {
        let doc: Value = serde_json::from_slice(line).expect("json");
        collect_sealed(&doc, &mut sealed);
    }
    let placed = secrets_with_places(log);
    assert_eq!(
        placed.len(),
        sealed.len(),
        "{}: a sealed value at no known place",
        log.name
    );
    for (s, place) in &placed {
        let plain = cipher()
            .open(s, place)
            .unwrap_or_else(|e| panic!("{} {place:?}: {e}", log.name));
        assert!(!log.text.contains(&plain), "{} holds a secret", log.name);
        if let Some(key) = plain.strip_prefix("whsec_") {
            assert!(!log.text.contains(key), "{} holds a signing key", log.name);
        }
    }
}

/// Every sealed value in `log` with the place the runtime opens it at, found as the agent's state
/// is folded: a member's credentials belong beside the connection's server as it stood then.
fn secrets_with_places(log: &Log) -> Vec<(Sealed, Place)> {
    fn auth_in(
        agent: Uuid,
        c: &Connection<Sealed>,
        member: Option<&str>,
        environment: Environment,
        auth: &Auth<Sealed>,
        out: &mut Vec<(Sealed, Place)>,
    ) {
        auth.map_fields(|field, s| {
            // A Basic-auth username from before usernames were sealed is no sealed value.
            let text = serde_json::to_value(s).expect("serializes");
            if text.as_str().is_some_and(Sealed::is_sealed_text) {
                out.push((s.clone(), c.place_in(agent, member, environment, field)));
            }
        });
    }
    fn auth(
        agent: Uuid,
        c: &Connection<Sealed>,
        member: Option<&str>,
        auth: &Auth<Sealed>,
        out: &mut Vec<(Sealed, Place)>,
    ) {
        auth_in(agent, c, member, Environment::Draft, auth, out)
    }
    /// A team connection's credentials: the draft ones and its live ones.
    fn team(agent: Uuid, c: &Connection<Sealed>, out: &mut Vec<(Sealed, Place)>) {
        auth(agent, c, None, &c.auth, out);
        if let Some(live) = c.live_auth() {
            auth_in(agent, c, None, Environment::Live, live, out);
        }
    }
    fn snapshot(agent: Uuid, snap: &events::event::Snapshot, out: &mut Vec<(Sealed, Place)>) {
        for c in &snap.connections {
            team(agent, c, out);
        }
        endpoint(agent, &snap.endpoint, out);
    }
    fn endpoint(
        agent: Uuid,
        settings: &events::endpoint::EndpointSettings,
        out: &mut Vec<(Sealed, Place)>,
    ) {
        let push = &settings.asynchronous;
        if let Some(token) = &push.token {
            out.push((token.clone(), Place::push_token(agent, push.url.as_deref())));
        }
    }
    let mut out = Vec::new();
    let mut state = AgentState::new(log.envelopes[0].agent_id);
    for env in &log.envelopes {
        let agent = env.agent_id;
        match &env.event {
            Event::ConnectionAdded(e) => team(agent, &e.connection, &mut out),
            Event::ConnectionUpdated(e) => team(agent, &e.connection, &mut out),
            Event::MemberCredentialSet(e) => {
                let c = &state.connections[&e.connection].connection;
                auth_in(agent, c, Some(&e.member), e.environment, &e.auth, &mut out);
            }
            Event::EndpointConfigured(e) => endpoint(agent, &e.settings, &mut out),
            Event::SigningSecretRotated(e) => {
                out.push((e.secret.clone(), Place::signing_secret(agent)))
            }
            Event::Deployed(e) => snapshot(agent, &e.snapshot, &mut out),
            Event::Redeployed(e) => snapshot(agent, &e.snapshot, &mut out),
            _ => {}
        }
        state.apply(env);
    }
    out
}

/// The schema-1 fixtures written before places were bound to sealed secrets. Those added since
/// (`checks.jsonl`) seal `enc:v2:` values, bound to their place.
const BEFORE_PLACES: &[&str] = &[
    "lifecycle.jsonl",
    "stopped.jsonl",
    "members.jsonl",
    "keys.jsonl",
];

/// Every secret in the schema-1 fixtures written before places was sealed without one: it opens
/// where the runtime looks for it (checked above), and — the limit `docs/security.md` states —
/// anywhere else too, since it carries no place to check. Those sealed since open only there.
#[test]
fn v1_secrets_are_unbound_and_still_open() {
    for &(_, file, agent) in FIXTURES.iter().filter(|(schema, _, _)| *schema == 1) {
        if !BEFORE_PLACES.contains(&file) {
            let log = Log::open(1, file, agent);
            for (s, place) in secrets_with_places(&log) {
                assert!(!s.is_unbound(), "{} {place:?}", log.name);
                let elsewhere = Place::signing_secret(Uuid::from_u128(1));
                assert!(
                    cipher().open(&s, &elsewhere).is_err(),
                    "{} {place:?}",
                    log.name
                );
            }
            continue;
        }
        let log = Log::open(1, file, agent);
        for (s, place) in secrets_with_places(&log) {
            assert!(s.is_unbound(), "{} {place:?}", log.name);
            let here = cipher().open(&s, &place).expect("opens at its place");
            let elsewhere = Place::signing_secret(Uuid::from_u128(1));
            assert_eq!(cipher().open(&s, &elsewhere).expect("opens anywhere"), here);
        }
    }
}

fn collect_sealed(v: &Value, out: &mut Vec<Sealed>) {
    match v {
        Value::String(s) if Sealed::is_sealed_text(s) => {
            out.push(serde_json::from_value(v.clone()).expect("a sealed value"));
        }
        Value::Array(items) => items.iter().for_each(|i| collect_sealed(i, out)),
        Value::Object(map) => map.values().for_each(|i| collect_sealed(i, out)),
        _ => {}
    }
}

/// While this build writes the fixtures' schema, re-sealing a decoded event must give the stored
/// hash: a change to how an event serializes has to bump `SCHEMA` (and add fixtures) rather than
/// slip in under the old number.
#[test]
fn this_build_still_writes_schema_v1_as_stored() {
    if events::event::SCHEMA != 1 {
        return;
    }
    for &(_, file, agent) in FIXTURES.iter().filter(|(schema, _, _)| *schema == 1) {
        let log = Log::open(1, file, agent);
        for env in &log.envelopes {
            let new = NewEvent {
                id: env.id,
                at: env.at,
                event: env.event.clone(),
            };
            let (again, _) = Envelope::seal(agent, env.seq, &env.prev_hash, &new).expect("seals");
            assert_eq!(again.hash, env.hash, "{} seq {}", log.name, env.seq);
        }
    }
}

/// The hash as `envelope.rs` and the docs state it: hex(SHA-256(prev_hash, "\n", canonical JSON
/// of the envelope without "hash")), canonical meaning sorted keys and no whitespace. Written
/// out here independently, so that the stored format is pinned by more than the code itself.
fn documented_hash(doc_without_hash: &Value, prev_hash: &str) -> String {
    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    canonical(doc_without_hash, &mut text);
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(text.as_bytes());
    hex::encode(h.finalize())
}

/// Re-hashes `doc` (an envelope) as a writer would, after an edit.
fn rehash(mut doc: Value) -> Vec<u8> {
    let map = doc.as_object_mut().expect("an object");
    map.remove("hash");
    let prev = map["prev_hash"].as_str().expect("prev_hash").to_owned();
    let hash = documented_hash(&doc, &prev);
    doc["hash"] = Value::String(hash);
    serde_json::to_vec(&doc).expect("serializes")
}

#[test]
fn fixture_hashes_follow_the_documented_formula() {
    let log = Log::open(1, "lifecycle.jsonl", LIFECYCLE);
    for (line, env) in log.lines.iter().zip(&log.envelopes) {
        let mut doc: Value = serde_json::from_slice(line).expect("json");
        doc.as_object_mut().expect("object").remove("hash");
        assert_eq!(documented_hash(&doc, &env.prev_hash), env.hash);
    }
}

/// A later build may add fields (with `#[serde(default)]`) to an event or to the envelope; this
/// build must still read what it wrote. Decoding ignores fields it does not know, and the hash
/// covers them, so they verify too.
#[test]
fn unknown_fields_from_a_later_build_still_decode() {
    let log = Log::open(1, "lifecycle.jsonl", LIFECYCLE);
    for (i, line) in log.lines.iter().enumerate() {
        let env = &log.envelopes[i];
        let mut doc: Value = serde_json::from_slice(line).expect("json");
        doc["data"]["added_later"] = serde_json::json!({"x": [1, 2], "y": null});
        doc["trace_id"] = Value::String("4bf92f3577b34da6a3ce929d0e0e4736".into());
        if let Some(spec) = doc["data"].get_mut("spec") {
            spec["avatar"] = Value::String("https://example.com/a.png".into());
        }
        let bytes = rehash(doc);

        let decoded = Envelope::decode(&bytes).expect("decodes");
        assert_eq!(decoded.event, env.event, "seq {}", env.seq);
        let verified = Envelope::open_verified(&bytes, LIFECYCLE, env.seq, &env.prev_hash)
            .unwrap_or_else(|e| panic!("seq {}: {e}", env.seq));
        assert_eq!(verified.event, env.event);
        assert_ne!(
            verified.hash, env.hash,
            "the new field is covered by the hash"
        );
    }
}

#[test]
fn an_edited_fixture_line_is_detected() {
    let log = Log::open(1, "stopped.jsonl", STOPPED);
    let text = String::from_utf8(log.lines[0].clone()).expect("utf-8");
    let edited = text.replace("\"Greeter\"", "\"Impostor\"");
    assert_ne!(edited, text);
    assert!(Envelope::open_verified(edited.as_bytes(), STOPPED, 1, GENESIS_HASH).is_err());
}
