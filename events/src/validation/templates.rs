//! Templates and expressions: compiled for their syntax only, nothing is rendered.

use std::panic::{catch_unwind, AssertUnwindSafe};

use minijinja::Environment;
use serde_json::Value;

use super::Report;
use crate::spec::limits::{too_many_operators, Code};

/// Compiles every string inside `value`; `path` grows `.key` and `[k]` on the way down.
pub(super) fn check_json_templates(
    jinja: &Environment,
    value: &Value,
    path: String,
    report: &mut Report,
) {
    match value {
        Value::String(source) => check_template(jinja, source, path, report),
        Value::Array(items) => {
            for (k, item) in items.iter().enumerate() {
                check_json_templates(jinja, item, format!("{path}[{k}]"), report);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                check_json_templates(jinja, item, format!("{path}.{key}"), report);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

pub(super) fn check_template(jinja: &Environment, source: &str, path: String, report: &mut Report) {
    // Never hand MiniJinja an expression deep enough to overflow its recursion (limits.rs).
    if let Some(why) = too_many_operators(source, Code::Template) {
        report.error("bad_template", path, why);
        return;
    }
    // No MiniJinja panic is known for templates; one would be a compile error, not a crash.
    let compiled = catch_unwind(AssertUnwindSafe(|| {
        jinja
            .template_from_str(source)
            .map(|_| ())
            .map_err(|e| describe(&e))
    }))
    .unwrap_or_else(|_| Err("the template compiler gave up on it".to_owned()));
    if let Err(why) = compiled {
        report.error(
            "bad_template",
            path,
            format!(
                "template does not compile ({why}): fix the MiniJinja syntax, e.g. close every \
                 `{{{{ ... }}}}` and `{{% ... %}}`"
            ),
        );
    }
}

pub(super) fn check_expression(
    jinja: &Environment,
    source: &str,
    path: String,
    report: &mut Report,
) {
    if let Some(why) = too_many_operators(source, Code::Expression) {
        report.error("bad_expression", path, why);
        return;
    }
    // MiniJinja 2.24 panics ("empty lexer stack") on an expression with text after a closing
    // `}}`, e.g. `x }} y` (found by tests/fuzz_validator.rs); a panic is a compile error too.
    let compiled = catch_unwind(AssertUnwindSafe(|| {
        jinja
            .compile_expression(source)
            .map(|_| ())
            .map_err(|e| describe(&e))
    }))
    .unwrap_or_else(|_| Err("the expression ends with `}}` before its end".to_owned()));
    if let Err(why) = compiled {
        report.error(
            "bad_expression",
            path,
            format!(
                "condition does not compile ({why}): write one MiniJinja expression without \
                 braces, e.g. `input.count > 1`"
            ),
        );
    }
}

fn describe(e: &minijinja::Error) -> String {
    let what = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    match e.line() {
        Some(line) => format!("{what}, line {line}"),
        None => what,
    }
}
