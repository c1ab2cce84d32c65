//! Generators shared by the property tests (`fuzz_decoder.rs`, `fuzz_validator.rs`): agent specs
//! with every node kind, references that mostly hit and sometimes miss, templates that are
//! valid, broken, random, or long chains of operators, and the events a log holds.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use events::check::{CheckOutcome, CheckStatus};
use events::connection::{
    Auth, Connection, CredentialMode, Environment, EnvironmentCredentials, Environments,
};
use events::endpoint::{AsyncSettings, EndpointSettings};
use events::event::*;
use events::secret::{Cipher, Place, Sealed};
use events::spec::{AgentSpec, Branch, Flow, KnowledgeFile, Model, Node, NodeKind, Tool};
use events::Event;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;
use uuid::Uuid;

/// Cases per property: `PROPTEST_CASES` when set, else 2,000 (what CI runs).
pub fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    ProptestConfig {
        cases,
        // A failure prints its minimal input; no regression files are written into the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The stack of the threads that validate and decode in the server (actix and tokio threads:
/// Rust's default of 2 MiB). Each case runs on such a thread, so a stack overflow in the code
/// under test shows here as it would in production.
const SERVER_STACK: usize = 2 << 20;

/// Generating a case recurses through the strategies' frames, which are large in a debug build:
/// the generator gets a stack of its own, far larger than the code under test.
const GENERATOR_STACK: usize = 64 << 20;

/// Runs `test` on [`config`]'s number of cases from the strategy `make` builds: cases are
/// generated (and shrunk) on a large stack, and each runs on a thread with the server's stack.
pub fn property<S>(make: fn() -> S, test: impl Fn(S::Value) -> Result<(), TestCaseError> + Sync)
where
    S: Strategy,
    S::Value: Send,
{
    let test = &test;
    let outcome = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(GENERATOR_STACK)
            .spawn_scoped(scope, move || {
                let mut runner = proptest::test_runner::TestRunner::new(config());
                runner
                    .run(&make(), |value| {
                        std::thread::scope(|inner| {
                            std::thread::Builder::new()
                                .stack_size(SERVER_STACK)
                                .spawn_scoped(inner, move || test(value))
                                .expect("a test thread starts")
                                .join()
                                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                        })
                    })
                    .map_err(|e| e.to_string())
            })
            .expect("the generator thread starts")
            .join()
    });
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(failure)) => panic!("{failure}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Ids a spec refers to: a small pool, so that most references hit something.
const IDS: &[&str] = &["a", "b", "c", "start", "end", "weather", "crm"];

/// Agent ids the fake directory knows: one live, one a draft (see `fuzz_validator.rs`).
pub const LIVE: Uuid = Uuid::from_u128(0x11);
pub const DRAFT: Uuid = Uuid::from_u128(0x12);

/// Strings that have broken parsers before: empty, whitespace, escapes, a NUL, a BOM, a lone
/// combining mark, right-to-left text, an emoji with a joiner, JSON and template syntax.
const NASTY: &[&str] = &[
    "",
    " ",
    "\t\r\n",
    "\\",
    "\"",
    "\u{0}",
    "\u{feff}",
    "\u{301}",
    "\u{202e}abc",
    "👩\u{200d}💻",
    "null",
    "{}",
    "[]",
    "{{",
    "%}",
    "***",
];

/// Characters drawn from: printable ASCII, template syntax, controls, any Unicode scalar.
const ALPHABETS: usize = 4;

fn text(seed: u64, len: usize, alphabet: usize) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            // xorshift64*: cheap, so that big drafts are cheap to generate in a debug build.
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32;
            match alphabet {
                0 => char::from(b' ' + (r % 95) as u8),
                1 => char::from(b"{}%#|.-()[]'\"\\ ~+*<>=!aZ_09"[(r % 27) as usize]),
                2 => char::from_u32((r % 32) as u32).unwrap_or(' '),
                _ => char::from_u32((r % 0x11_0000) as u32).unwrap_or('\u{fffd}'),
            }
        })
        .collect()
}

/// Any text at all: empty, nasty, ASCII, template syntax, controls, any Unicode, up to 300
/// characters.
pub fn garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        select(NASTY).prop_map(str::to_owned),
        (any::<u64>(), 0..300usize, 0..ALPHABETS).prop_map(|(seed, len, a)| text(seed, len, a)),
    ]
}

pub fn id() -> impl Strategy<Value = String> {
    prop_oneof![4 => select(IDS).prop_map(str::to_owned), 1 => garbage()]
}

const VALID_TEMPLATES: &[&str] = &[
    "plain text",
    "Hello {{ input.name }}",
    "{{ nodes.a.text | upper }}",
    "{{ input }}",
    "{% if input.x %}yes{% else %}no{% endif %}",
    "{% for p in nodes.k.passages %}{{ p.text }}{% endfor %}",
    "{{ input.n * 2 + 1 }}",
    "{# a comment #}{{ input.q ~ '!' }}",
];

const BROKEN_TEMPLATES: &[&str] = &[
    "{{",
    "}}{{",
    "{{ }}",
    "{% if %}",
    "{% endif %}",
    "{{ a b }}",
    "{% for %}",
    "{{ input.x | }}",
    "{% raw %}",
];

const EXPRESSIONS: &[&str] = &[
    "true",
    "input.x > 1",
    "nodes.a.status == 200 and not input.y",
    "input.name in ['a', 'b']",
    "",
    "{{ x }}",
    "x ==",
    "(",
];

/// Operators that nest when chained: prefix (`not not not x`) and postfix or infix (`x.a.a.a`,
/// `x|f|f`, `1+1+1`). Long chains are what overflowed MiniJinja's recursion.
const PREFIX: &[&str] = &["not ", "-", "(", "["];
const POSTFIX: &[&str] = &[
    ".a",
    "|upper",
    "+1",
    "~1",
    " and 1",
    "**1",
    "[0]",
    " if 1 else 1",
];

fn chain() -> impl Strategy<Value = String> {
    prop_oneof![
        (select(PREFIX), 0..5_000usize).prop_map(|(op, n)| format!("{}x", op.repeat(n))),
        (select(POSTFIX), 0..5_000usize).prop_map(|(op, n)| format!("x{}", op.repeat(n))),
    ]
}

pub fn template() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(VALID_TEMPLATES).prop_map(str::to_owned),
        2 => select(BROKEN_TEMPLATES).prop_map(str::to_owned),
        2 => garbage(),
        1 => chain().prop_map(|c| format!("{{{{ {c} }}}}")),
        1 => chain().prop_map(|c| format!("{{% set v = {c} %}}{{{{ v }}}}")),
    ]
}

pub fn expression() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(EXPRESSIONS).prop_map(str::to_owned),
        2 => garbage(),
        1 => chain(),
    ]
}

/// A JSON value whose strings are templates, as in `output`, `args`, `input` and a tool body.
pub fn templates_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        template().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(garbage(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Any JSON value, for the decoder: keys and strings of any text.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        garbage().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(garbage(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn timeout() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        Just(None),
        (0..700u64).prop_map(Some),
        any::<u64>().prop_map(Some),
    ]
}

fn target() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(0.8, id())
}

fn node_kind() -> impl Strategy<Value = NodeKind> {
    prop_oneof![
        templates_value().prop_map(|output| NodeKind::Transform { output }),
        template().prop_map(|prompt| NodeKind::Model {
            prompt,
            tools: vec![],
            max_steps: None,
            history: false
        }),
        (id(), templates_value()).prop_map(|(tool, args)| NodeKind::Tool { tool, args }),
        (template(), any::<u32>()).prop_map(|(query, top_k)| NodeKind::Knowledge { query, top_k }),
        (
            prop::collection::vec(
                (expression(), id()).prop_map(|(when, next)| Branch { when, next }),
                0..4
            ),
            target()
        )
            .prop_map(|(branches, otherwise)| NodeKind::Condition {
                branches,
                otherwise
            }),
        (collaborator(), templates_value())
            .prop_map(|(agent, input)| NodeKind::Agent { agent, input }),
        templates_value().prop_map(|output| NodeKind::End { output }),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    (id(), node_kind(), timeout(), target()).prop_map(|(id, kind, timeout_s, next)| Node {
        id,
        kind,
        timeout_s,
        next,
    })
}

fn collaborator() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(LIVE.to_string()),
        Just(DRAFT.to_string()),
        Just(Uuid::from_u128(0x1).to_string()),
        any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        garbage(),
    ]
}

fn model() -> impl Strategy<Value = Option<Model>> {
    let provider = prop_oneof![
        Just("echo".to_owned()),
        Just("openai".to_owned()),
        garbage()
    ];
    let base_url = prop::option::of(prop_oneof![
        Just("https://api.example.com/v1".to_owned()),
        Just("http://127.0.0.1:1/v1".to_owned()),
        Just("http://169.254.169.254/".to_owned()),
        Just("http://[::ffff:a9fe:a9fe]/".to_owned()),
        Just("ftp://x".to_owned()),
        garbage(),
    ]);
    prop::option::weighted(
        0.9,
        (
            provider,
            garbage(),
            timeout(),
            base_url,
            prop::option::of(id()),
        )
            .prop_map(|(provider, name, timeout_s, base_url, connection)| Model {
                provider,
                name,
                timeout_s,
                base_url,
                connection,
            }),
    )
}

fn tool() -> impl Strategy<Value = Tool> {
    let security = prop_oneof![
        select(&["api_key", "basic", "bearer", "key_value"][..]).prop_map(str::to_owned),
        garbage(),
    ];
    let method = prop_oneof![
        select(&["GET", "POST", "delete", ""][..]).prop_map(str::to_owned),
        garbage(),
    ];
    let body = prop::option::of(
        templates_value().prop_filter("null reads back as none", |v| !v.is_null()),
    );
    (id(), id(), security, method, template(), body).prop_map(
        |(name, connection, security, method, path, body)| Tool {
            name,
            connection,
            security,
            method,
            path,
            body,
            description: None,
            parameters: None,
            approval: false,
        },
    )
}

/// A draft as a client could send it, valid or not in every way validation knows.
pub fn spec() -> impl Strategy<Value = AgentSpec> {
    let knowledge = prop::collection::vec(
        (id(), garbage()).prop_map(|(name, content)| KnowledgeFile { name, content }),
        0..3,
    );
    let flow = prop::option::weighted(
        0.9,
        (id(), prop::collection::vec(node(), 0..10))
            .prop_map(|(start, nodes)| Flow { start, nodes }),
    );
    let voice = prop::option::of(json().prop_filter("null reads back as none", |v| !v.is_null()));
    (
        garbage(),
        garbage(),
        model(),
        voice,
        garbage(),
        knowledge,
        prop::collection::vec(tool(), 0..4),
        prop::collection::vec(collaborator(), 0..3),
        flow,
    )
        .prop_map(
            |(
                name,
                description,
                model,
                voice,
                instructions,
                knowledge,
                tools,
                collaborators,
                flow,
            )| {
                AgentSpec {
                    name,
                    description,
                    model,
                    voice,
                    instructions,
                    knowledge,
                    tools,
                    collaborators,
                    flow,
                    memory: None,
                }
            },
        )
}

/// The cipher the generators seal secrets with.
pub fn cipher() -> Cipher {
    Cipher::from_key(&[7; 32])
}

fn sealed() -> impl Strategy<Value = Sealed> {
    // Where a value is sealed for plays no part in decoding or hashing it.
    garbage().prop_map(|s| cipher().seal(&s, &Place::signing_secret(Uuid::nil())))
}

fn auth() -> impl Strategy<Value = Auth<Sealed>> {
    prop_oneof![
        (garbage(), prop::option::of(sealed()))
            .prop_map(|(header, key)| Auth::ApiKey { header, key }),
        (prop::option::of(sealed()), prop::option::of(sealed()))
            .prop_map(|(username, password)| Auth::Basic { username, password }),
        prop::option::of(sealed()).prop_map(|token| Auth::Bearer { token }),
        prop::collection::btree_map(garbage(), sealed(), 0..3)
            .prop_map(|pairs: BTreeMap<String, Sealed>| Auth::KeyValue { pairs }),
    ]
}

/// A stored connection (as validation and snapshots see them).
pub fn connection() -> impl Strategy<Value = Connection<Sealed>> {
    (
        id(),
        garbage(),
        garbage(),
        any::<bool>(),
        any::<bool>(),
        auth(),
        prop::option::of(auth()),
        prop::option::of(garbage()),
    )
        .prop_map(
            |(id, display_name, server, sso, member, auth, live, check_path)| Connection {
                id,
                display_name,
                server,
                sso,
                credentials: if member {
                    CredentialMode::Member
                } else {
                    CredentialMode::Team
                },
                auth,
                environments: live.map(|auth| Environments {
                    live: Some(EnvironmentCredentials { auth }),
                }),
                check_path,
            },
        )
}

fn endpoint() -> impl Strategy<Value = EndpointSettings> {
    (
        any::<u64>(),
        any::<u32>(),
        any::<bool>(),
        prop::option::of(garbage()),
        prop::option::of(sealed()),
        timeout(),
    )
        .prop_map(
            |(sync_timeout_s, max_concurrency, push_enabled, url, token, timeout_s)| {
                EndpointSettings {
                    sync_timeout_s,
                    max_concurrency,
                    asynchronous: AsyncSettings {
                        push_enabled,
                        url,
                        token,
                        timeout_s,
                    },
                }
            },
        )
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        spec(),
        endpoint(),
        prop::collection::vec(connection(), 0..3),
    )
        .prop_map(|(spec, endpoint, connections)| Snapshot {
            spec,
            endpoint,
            connections,
        })
}

/// Every kind of event, with arbitrary contents.
pub fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        spec().prop_map(|spec| Event::Created(Created { spec })),
        spec().prop_map(|spec| Event::FlowEdited(FlowEdited { spec })),
        endpoint().prop_map(|settings| Event::EndpointConfigured(EndpointConfigured { settings })),
        sealed().prop_map(|secret| Event::SigningSecretRotated(SigningSecretRotated { secret })),
        connection().prop_map(|connection| Event::ConnectionAdded(ConnectionAdded { connection })),
        connection()
            .prop_map(|connection| Event::ConnectionUpdated(ConnectionUpdated { connection })),
        garbage().prop_map(|id| Event::ConnectionRemoved(ConnectionRemoved { id })),
        (garbage(), garbage(), auth(), any::<bool>()).prop_map(
            |(connection, member, auth, live)| {
                Event::MemberCredentialSet(MemberCredentialSet {
                    connection,
                    member,
                    auth,
                    environment: if live {
                        Environment::Live
                    } else {
                        Environment::Draft
                    },
                })
            }
        ),
        (
            garbage(),
            any::<bool>(),
            prop::option::of(garbage()),
            0..4u8,
            prop::option::of(any::<u16>()),
            any::<u64>(),
            prop::option::of(garbage()),
        )
            .prop_map(
                |(connection, live, member, status, http_status, latency_ms, detail)| {
                    Event::ConnectionChecked(ConnectionChecked {
                        connection,
                        environment: if live {
                            Environment::Live
                        } else {
                            Environment::Draft
                        },
                        member,
                        outcome: CheckOutcome {
                            status: match status {
                                0 => CheckStatus::Authenticated,
                                1 => CheckStatus::Rejected,
                                _ => CheckStatus::Unreachable,
                            },
                            http_status,
                            latency_ms,
                            detail,
                        },
                    })
                }
            ),
        (any::<u32>(), prop::option::of(any::<u32>()), snapshot()).prop_map(
            |(version, rollback_of, snapshot)| Event::Deployed(Deployed {
                version,
                rollback_of,
                snapshot
            })
        ),
        (any::<u32>(), prop::option::of(any::<u32>()), snapshot()).prop_map(
            |(version, rollback_of, snapshot)| Event::Redeployed(Redeployed {
                version,
                rollback_of,
                snapshot
            })
        ),
        garbage().prop_map(|reason| Event::Undeployed(Undeployed { reason })),
        (garbage(), garbage(), prop::option::of(garbage())).prop_map(|(id, sha256, member)| {
            Event::KeyIssued(KeyIssued { id, sha256, member })
        }),
        garbage().prop_map(|id| Event::KeyRevoked(KeyRevoked { id })),
    ]
}

/// Any instant from year 0 to 9999, to the nanosecond.
pub fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (-62_167_219_200i64..253_402_300_799, 0..1_000_000_000u32).prop_map(|(secs, nanos)| {
        Utc.timestamp_opt(secs, nanos)
            .single()
            .expect("in chrono's range")
    })
}
