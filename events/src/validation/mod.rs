//! Validation of a draft: every error and warning rule of the contract, each a [`Problem`] with
//! the path of the offending field. Any error or warning blocks deploy; [`check_runnable`] says
//! which of them block a run of the draft (a preview).
//!
//! The rules come in families, one submodule each:
//! - `profile`: the name, description and model (the contract's summary "profile").
//! - `tools`: tools and the connections they and the model use.
//! - `collaborators`: the other agents this one may call.
//! - `flow`: the flow's nodes, one by one: targets, required `next`, what each kind refers to.
//! - `graph`: the flow as a graph: cycles and reachability.
//! - `templates`: MiniJinja syntax of templates and condition expressions.
//!
//! [`validate`] runs them in the order fields appear in the spec, so the same draft always
//! yields the same report. `docs/validation.md` lists every code.

use std::fmt::Display;
use std::ops::RangeInclusive;

use minijinja::Environment;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::connection::Connection;
use crate::secret::Sealed;
use crate::spec::AgentSpec;

mod checks;
mod collaborators;
mod flow;
pub use flow::{is_function_name, KNOWLEDGE_TOOL};
mod graph;
mod profile;
mod templates;
#[cfg(test)]
mod tests;
mod tools;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    pub code: String,
    pub message: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Report {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Report {
    /// Deployable: no error and no warning.
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.warnings.is_empty()
    }

    fn error(&mut self, code: &str, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(problem(code, path, message));
    }

    fn warning(&mut self, code: &str, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(problem(code, path, message));
    }
}

fn problem(code: &str, path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        code: code.to_owned(),
        message: message.into(),
        path: path.into(),
    }
}

/// What validation needs to know of another agent named as a collaborator.
#[derive(Debug, Clone, PartialEq)]
pub struct Collaborator {
    pub name: String,
    pub live: bool,
}

/// Looks up other agents. Implemented by the runtime over the event store.
pub trait Directory {
    fn collaborator(&self, id: Uuid) -> Option<Collaborator>;
}

/// Validates `spec` as agent `agent_id` would deploy it with `connections`.
pub fn validate(
    agent_id: Uuid,
    spec: &AgentSpec,
    connections: &[Connection<Sealed>],
    directory: &dyn Directory,
) -> Report {
    let mut report = Report::default();
    // One environment compiles every template and expression: syntax only, nothing is rendered.
    let jinja = Environment::new();
    profile::check_profile(spec, &mut report);
    profile::check_model(spec.model.as_ref(), connections, &mut report);
    tools::check_tools(spec, connections, &jinja, &mut report);
    collaborators::check_collaborators(agent_id, &spec.collaborators, directory, &mut report);
    flow::check_flow(agent_id, spec, &jinja, &mut report);
    tools::check_unused_connections(spec, connections, &mut report);
    if let Some(memory) = &spec.memory {
        check_range(
            "memory_out_of_range",
            "memory.turns",
            memory.turns,
            &crate::spec::limits::MEMORY_TURNS,
            "memory.turns",
            &mut report,
        );
    }
    report
}

/// [`validate`], plus what agent `state` knows of the connections beyond the spec: the latest
/// checks of their credentials (`connection_rejected`). What deploy, the validation route and
/// the summary run.
pub fn validate_agent(
    state: &crate::AgentState,
    spec: &AgentSpec,
    connections: &[Connection<Sealed>],
    directory: &dyn Directory,
) -> Report {
    let mut report = validate(state.id, spec, connections, directory);
    checks::check_rejected(connections, &state.connections, &mut report);
    report
}

/// Errors that do not keep a draft from running: the profile's text, which people and search read
/// and no run does.
const NOT_BLOCKING_A_RUN: &[&str] = &["missing_name", "missing_description"];

/// Whether the draft can run at all, as a preview runs it: `Err` with the problems that keep it
/// from running, which are every error but the profile's text. A draft with one would only
/// fail at run time, or do what its author cannot have meant. Warnings (an unused tool, an
/// unreachable node) flag a draft that runs but is probably not what was meant: they block a
/// deploy, not a preview, which is how the author sees what the draft does.
pub fn check_runnable(
    agent_id: Uuid,
    spec: &AgentSpec,
    connections: &[Connection<Sealed>],
    directory: &dyn Directory,
) -> Result<(), Report> {
    let mut report = validate(agent_id, spec, connections, directory);
    report
        .errors
        .retain(|p| !NOT_BLOCKING_A_RUN.contains(&p.code.as_str()));
    report.warnings.clear();
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}

// ---- hints shared by every family ------------------------------------------------------------

fn check_range<T: PartialOrd + Display>(
    code: &str,
    what: &str,
    value: T,
    range: &RangeInclusive<T>,
    path: impl Into<String>,
    report: &mut Report,
) {
    if !range.contains(&value) {
        report.error(
            code,
            path,
            format!(
                "{what} {value} is out of range: use a value from {} to {}",
                range.start(),
                range.end()
            ),
        );
    }
}

/// Up to ten names for a "use one of" hint, so a huge draft does not make a huge message.
fn listing<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = names.collect();
    if names.is_empty() {
        return "(none yet)".to_owned();
    }
    names.sort_unstable();
    names.dedup();
    let more = names.len().saturating_sub(10);
    names.truncate(10);
    let mut out = names.join(", ");
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}
