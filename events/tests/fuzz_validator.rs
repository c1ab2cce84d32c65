//! Property tests of the flow validator and the size limits. They guard against a draft — any
//! draft a client can store — crashing or confusing the server that checks it: `validate` never
//! panics or overflows the stack, gives the same report every time and for the same draft read
//! back from JSON, names only fields that exist, and `limits::check` never panics.
//!
//! `PROPTEST_CASES` sets the cases per property (2,000 by default). docs/reliability.md records
//! what they found: the first run aborted with a stack overflow inside MiniJinja's parser.

mod fuzz_common;

use std::collections::HashMap;

use events::spec::{limits, AgentSpec};
use events::validation::{validate, Collaborator, Directory, Report};
use fuzz_common::{connection, property, spec, DRAFT, LIVE};
use proptest::prelude::*;
use uuid::Uuid;

/// The agent under validation.
const ME: Uuid = Uuid::from_u128(0x1);

struct Agents(HashMap<Uuid, Collaborator>);

impl Directory for Agents {
    fn collaborator(&self, id: Uuid) -> Option<Collaborator> {
        self.0.get(&id).cloned()
    }
}

fn agents() -> Agents {
    let agent = |name: &str, live| Collaborator {
        name: name.into(),
        live,
    };
    Agents(HashMap::from([
        (LIVE, agent("Translator", true)),
        (DRAFT, agent("Summarizer", false)),
    ]))
}

/// The spec's top-level fields, and `connections.<id>` for problems about connections.
const ROOTS: &[&str] = &[
    "name",
    "description",
    "model",
    "voice",
    "instructions",
    "knowledge",
    "tools",
    "collaborators",
    "flow",
    "connections",
];

fn root(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or("")
}

#[test]
fn validation_is_total_and_deterministic() {
    property(
        || (spec(), prop::collection::vec(connection(), 0..3)),
        |(spec, connections)| {
            let directory = agents();
            let report = validate(ME, &spec, &connections, &directory);
            prop_assert_eq!(&validate(ME, &spec, &connections, &directory), &report);

            // The draft as the log stores it (JSON) is judged the same.
            let json = serde_json::to_vec(&spec).expect("serializes");
            let stored: AgentSpec = serde_json::from_slice(&json).expect("reads back");
            prop_assert_eq!(&stored, &spec);
            prop_assert_eq!(&validate(ME, &stored, &connections, &directory), &report);

            let Report { errors, warnings } = &report;
            prop_assert_eq!(report.ok(), errors.is_empty() && warnings.is_empty());
            for problem in errors.iter().chain(warnings) {
                prop_assert!(
                    !problem.code.is_empty() && !problem.message.is_empty(),
                    "{:?}",
                    problem
                );
                prop_assert!(
                    ROOTS.contains(&root(&problem.path)),
                    "unknown path {:?}",
                    problem.path
                );
            }
            // A draft with no flow, or without a name, never passes.
            if spec.flow.is_none() || spec.name.trim().is_empty() {
                prop_assert!(!report.ok());
            }
            Ok(())
        },
    );
}

#[test]
fn size_limits_are_total_and_name_a_field() {
    property(spec, |spec| {
        if let Err(rejection) = limits::check(&spec) {
            let field = rejection
                .field()
                .expect("a limit names its field")
                .to_owned();
            prop_assert!(ROOTS.contains(&root(&field)), "unknown field {:?}", field);
        }
        Ok(())
    });
}
