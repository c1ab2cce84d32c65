//! Templates over the run's context `{input, nodes: {ID: output}}`, with MiniJinja.
//!
//! A JSON template is rendered string by string. A string that is exactly one `{{ expr }}` keeps
//! the expression's JSON type (`"{{ input.n }}"` with `n = 3` is the number 3), so a flow can pass
//! objects and numbers between nodes without quoting them; every other string renders to text.
//!
//! Templates are written by agent authors and run inside the server, so the engine is locked
//! down: it has no loader (no `include` or `import` can read a file) and runs on fuel, so a loop
//! that would never end stops with an error instead.

use std::sync::OnceLock;

use minijinja::Environment;
use serde_json::Value;

/// Instructions one render or expression may execute; far above what any sane template needs.
const FUEL: u64 = 100_000;
/// How much of a template's source an error quotes.
const QUOTE_CHARS: usize = 120;

/// A template that could not be compiled or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template `{template}` failed: {reason}")]
pub struct TemplateError {
    /// The template's source, shortened, so an author can find it in the flow.
    pub template: String,
    /// What went wrong, in MiniJinja's words (kind, detail, line).
    pub reason: String,
}

impl TemplateError {
    fn new(source: &str, e: &minijinja::Error) -> Self {
        let mut reason = match e.detail() {
            Some(detail) => format!("{}: {detail}", e.kind()),
            None => e.kind().to_string(),
        };
        if let Some(line) = e.line() {
            reason.push_str(&format!(" (line {line})"));
        }
        TemplateError {
            template: quote(source),
            reason,
        }
    }
}

fn quote(source: &str) -> String {
    if source.chars().count() <= QUOTE_CHARS {
        source.to_owned()
    } else {
        let head: String = source.chars().take(QUOTE_CHARS).collect();
        format!("{head}…")
    }
}

/// The one environment every template of the process renders with. Built once: it holds no
/// per-run state, and fuel is counted per render.
fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env
    })
}

/// Renders every string inside `value` against `ctx`, keeping the JSON shape.
pub fn render(value: &Value, ctx: &Value) -> Result<Value, TemplateError> {
    let ctx = minijinja::Value::from_serialize(ctx);
    render_value(value, &ctx)
}

/// Runs the template engine on `source`. Drafts saved before the write-time guards (and
/// previews, which run unvalidated drafts) can reach inputs on which MiniJinja panics; a panic
/// must fail the node, not the executor.
fn guarded<T>(
    source: &str,
    f: impl FnOnce() -> Result<T, minijinja::Error>,
) -> Result<T, TemplateError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(|e| TemplateError::new(source, &e)),
        Err(_) => Err(TemplateError {
            template: quote(source),
            reason: "the template engine could not process this template".into(),
        }),
    }
}

/// Renders one template to text.
pub fn render_str(source: &str, ctx: &Value) -> Result<String, TemplateError> {
    guarded(source, || env().render_str(source, ctx))
}

/// Evaluates a condition expression (no braces, e.g. `input.count > 1`) for its truthiness.
pub fn eval_condition(expr: &str, ctx: &Value) -> Result<bool, TemplateError> {
    let value = guarded(expr, || {
        env()
            .compile_expression(expr)
            .and_then(|compiled| compiled.eval(ctx))
    })?;
    Ok(value.is_true())
}

fn render_value(value: &Value, ctx: &minijinja::Value) -> Result<Value, TemplateError> {
    Ok(match value {
        Value::String(source) => render_string(source, ctx)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| render_value(item, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, item)| Ok((key.clone(), render_value(item, ctx)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        Value::Null | Value::Bool(_) | Value::Number(_) => value.clone(),
    })
}

fn render_string(source: &str, ctx: &minijinja::Value) -> Result<Value, TemplateError> {
    if let Some(expr) = single_expression(source) {
        let value = guarded(source, || {
            env()
                .compile_expression(expr)
                .and_then(|compiled| compiled.eval(ctx))
        })?;
        return to_json(source, &value);
    }
    if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
        return Ok(Value::String(source.to_owned()));
    }
    guarded(source, || env().render_str(source, ctx)).map(Value::String)
}

/// The expression of a string that is exactly one `{{ expr }}` (spaces around it allowed), or
/// `None` for any other string. Whitespace-control dashes (`{{- x -}}`) are accepted.
fn single_expression(source: &str) -> Option<&str> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if ["{{", "}}", "{%", "%}", "{#", "#}"]
        .iter()
        .any(|marker| inner.contains(marker))
    {
        return None;
    }
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    let inner = inner.trim();
    (!inner.is_empty()).then_some(inner)
}

fn to_json(source: &str, value: &minijinja::Value) -> Result<Value, TemplateError> {
    if value.is_undefined() || value.is_none() {
        return Ok(Value::Null);
    }
    serde_json::to_value(value).map_err(|e| TemplateError {
        template: quote(source),
        reason: format!("the value cannot be turned into JSON: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({
            "input": {"n": 3, "x": 2.5, "tag": "a", "ok": true, "obj": {"k": [1, 2]},
                      "list": ["p", "q"], "nothing": null, "name": "Ada"},
            "nodes": {"greet": {"text": "hi"}}
        })
    }

    #[test]
    fn single_expression_keeps_its_json_type() {
        let ctx = ctx();
        assert_eq!(render(&json!("{{ input.n }}"), &ctx).unwrap(), json!(3));
        assert_eq!(render(&json!("{{ input.x }}"), &ctx).unwrap(), json!(2.5));
        assert_eq!(render(&json!(" {{input.ok}} "), &ctx).unwrap(), json!(true));
        assert_eq!(
            render(&json!("{{ input.obj }}"), &ctx).unwrap(),
            json!({"k": [1, 2]})
        );
        assert_eq!(
            render(&json!("{{ input.list }}"), &ctx).unwrap(),
            json!(["p", "q"])
        );
        assert_eq!(
            render(&json!("{{ input.nothing }}"), &ctx).unwrap(),
            json!(null)
        );
        assert_eq!(render(&json!("{{- input.n -}}"), &ctx).unwrap(), json!(3));
        assert_eq!(render(&json!("{{ input.n + 1 }}"), &ctx).unwrap(), json!(4));
    }

    #[test]
    fn undefined_single_expression_is_null() {
        assert_eq!(
            render(&json!("{{ input.missing }}"), &ctx()).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn other_strings_render_to_text() {
        let ctx = ctx();
        assert_eq!(
            render(&json!("x {{ input.n }}"), &ctx).unwrap(),
            json!("x 3")
        );
        assert_eq!(
            render(&json!("{{ input.n }}{{ input.n }}"), &ctx).unwrap(),
            json!("33")
        );
        assert_eq!(render(&json!("plain"), &ctx).unwrap(), json!("plain"));
        assert_eq!(
            render(&json!("{% if input.ok %}yes{% endif %}"), &ctx).unwrap(),
            json!("yes")
        );
        assert_eq!(
            render_str("Hello {{ input.name }}", &ctx).unwrap(),
            "Hello Ada"
        );
        // No HTML escaping: these are not web pages.
        assert_eq!(
            render_str("{{ '<b>' }}", &ctx).unwrap(),
            "<b>",
            "templates are not auto-escaped"
        );
    }

    #[test]
    fn nested_json_is_rendered_everywhere() {
        let template = json!({
            "a": {"b": ["{{ input.n }}", "n={{ input.n }}", 7, null, false]},
            "greeting": "{{ nodes.greet.text }} {{ input.name }}"
        });
        assert_eq!(
            render(&template, &ctx()).unwrap(),
            json!({"a": {"b": [3, "n=3", 7, null, false]}, "greeting": "hi Ada"})
        );
    }

    #[test]
    fn conditions_are_expressions() {
        let ctx = ctx();
        assert!(eval_condition("input.x > 1 and input.tag == \"a\"", &ctx).unwrap());
        assert!(!eval_condition("input.x > 1 and input.tag == \"b\"", &ctx).unwrap());
        assert!(!eval_condition("input.missing", &ctx).unwrap());
        assert!(eval_condition("input.list", &ctx).unwrap());
        let err = eval_condition("input.x >", &ctx).unwrap_err();
        assert_eq!(err.template, "input.x >");
        assert!(err.reason.contains("syntax error"), "{err}");
    }

    #[test]
    fn runaway_loops_run_out_of_fuel() {
        let nested =
            "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}";
        let err = render_str(nested, &ctx()).unwrap_err();
        assert!(err.reason.contains("fuel"), "{err}");
        let err = render(
            &json!({"k": ["{% for i in range(100000000) %}{% endfor %}"]}),
            &ctx(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("range(100000000)"), "{err}");
    }

    #[test]
    fn templates_cannot_read_files() {
        let err = render_str("{% include '/etc/passwd' %}", &ctx()).unwrap_err();
        assert!(err.reason.contains("not found"), "{err}");
    }

    #[test]
    fn an_engine_panic_is_an_error_not_a_crash() {
        // MiniJinja 2 panics compiling this expression (found by the validator's property tests).
        let err = eval_condition("x }} y", &json!({})).expect_err("refused, not a panic");
        assert_eq!(err.template, quote("x }} y"));
    }

    #[test]
    fn errors_name_the_template() {
        let err = render(&json!({"t": "{{ input.name | nosuchfilter }}"}), &ctx()).unwrap_err();
        assert_eq!(err.template, "{{ input.name | nosuchfilter }}");
        assert!(err.reason.contains("nosuchfilter"), "{err}");
    }
}
