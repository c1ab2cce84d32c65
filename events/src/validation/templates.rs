//! Templates and expressions: compiled for their syntax only, nothing is rendered.

use minijinja::Environment;
use serde_json::Value;

use super::Report;

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
    if let Err(e) = jinja.template_from_str(source) {
        report.error(
            "bad_template",
            path,
            format!(
                "template does not compile ({}): fix the MiniJinja syntax, e.g. close every \
                 `{{{{ ... }}}}` and `{{% ... %}}`",
                describe(&e)
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
    if let Err(e) = jinja.compile_expression(source) {
        report.error(
            "bad_expression",
            path,
            format!(
                "condition does not compile ({}): write one MiniJinja expression without \
                 braces, e.g. `input.count > 1`",
                describe(&e)
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
