//! Templates over the run's context `{input, nodes: {ID: output}}`, with MiniJinja.
//!
//! A JSON template is rendered string by string. A string that is exactly one `{{ expr }}` keeps
//! the expression's JSON type (`"{{ input.n }}"` with `n = 3` is the number 3), so a flow can pass
//! objects and numbers between nodes without quoting them; every other string renders to text.
//!
//! Templates are written by agent authors and run inside the server, so the engine is locked
//! down: it has no loader (no `include` or `import` can read a file) and runs on fuel, so a loop
//! that would never end stops with an error instead.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use minijinja::{AutoEscape, Environment, Expression};
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

/// The environment expressions compile in. Built once: it holds no per-run state, and fuel is
/// counted per evaluation.
fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(new_env)
}

fn new_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    // Templates are cached under their source as name, and MiniJinja would pick HTML or JSON
    // escaping from a name ending in `.html` or `.json`. Flow templates render plain text.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env
}

/// What one compiled template or expression is taken to weigh: a fixed part plus a multiple of
/// its source. Measured with a counting allocator: ~12 KiB for a one-line template or expression,
/// ~7× the source for a 17 KiB one; rounded up, so the budget errs on the safe side.
const ENTRY_BYTES: usize = 16 * 1024;
const BYTES_PER_SOURCE_BYTE: usize = 8;

/// The memory one thread's compiled templates and expressions may take, by that weight. A count
/// alone would not bound memory: an author may write templates of megabytes. `hangar serve` sets
/// it from `--cache-mb` ([`set_cache_bytes`]).
static CACHE_BYTES: AtomicUsize = AtomicUsize::new(4 << 20);

/// Sets each thread's budget for compiled templates and expressions, in bytes.
pub fn set_cache_bytes(per_thread: usize) {
    CACHE_BYTES.store(per_thread, Ordering::Relaxed);
}

fn weight(source: &str) -> usize {
    ENTRY_BYTES.saturating_add(source.len().saturating_mul(BYTES_PER_SOURCE_BYTE))
}

// Compiled templates and expressions by source, per thread (each arbiter runs its own flows), so
// a flow's templates are parsed once, not on every run: parsing was most of a render in a profile
// of sync calls. Per thread, because a compiled template borrows its environment.
thread_local! {
    static TEMPLATES: RefCell<Environment<'static>> = RefCell::new(new_env());
    static EXPRESSIONS: RefCell<HashMap<String, Expression<'static, 'static>>> =
        RefCell::new(HashMap::new());
    /// The weight of what this thread's two caches hold.
    static CACHED_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// Makes room for `source` in this thread's caches: if it would not fit, both start over (a
/// bound, not an eviction policy: a server's flows use far less). `false` if it alone weighs more
/// than the budget; it is then compiled for this one use.
fn make_room(source: &str) -> bool {
    let budget = CACHE_BYTES.load(Ordering::Relaxed);
    let w = weight(source);
    if w > budget {
        return false;
    }
    if CACHED_BYTES.get().saturating_add(w) > budget {
        TEMPLATES.with(|t| *t.borrow_mut() = new_env());
        EXPRESSIONS.with(|e| e.borrow_mut().clear());
        CACHED_BYTES.set(0);
    }
    CACHED_BYTES.set(CACHED_BYTES.get() + w);
    true
}

/// Renders template `source`, compiling it on first use in this thread.
fn render_cached<S: serde::Serialize>(source: &str, ctx: S) -> Result<String, minijinja::Error> {
    TEMPLATES.with(|templates| {
        if let Ok(compiled) = templates.borrow().get_template(source) {
            return compiled.render(ctx);
        }
        if !make_room(source) {
            return env().render_str(source, ctx);
        }
        let mut templates = templates.borrow_mut();
        templates.add_template_owned(source.to_owned(), source.to_owned())?;
        templates.get_template(source)?.render(ctx)
    })
}

/// Evaluates expression `expr`, compiling it on first use in this thread.
fn eval_cached<S: serde::Serialize>(
    expr: &str,
    ctx: S,
) -> Result<minijinja::Value, minijinja::Error> {
    EXPRESSIONS.with(|expressions| {
        if let Some(compiled) = expressions.borrow().get(expr) {
            return compiled.eval(ctx);
        }
        let compiled = env().compile_expression_owned(expr.to_owned())?;
        let value = compiled.eval(ctx);
        if make_room(expr) {
            expressions.borrow_mut().insert(expr.to_owned(), compiled);
        }
        value
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
    guarded(source, || render_cached(source, ctx))
}

/// Evaluates a condition expression (no braces, e.g. `input.count > 1`) for its truthiness.
pub fn eval_condition(expr: &str, ctx: &Value) -> Result<bool, TemplateError> {
    let value = guarded(expr, || eval_cached(expr, ctx))?;
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
        let value = guarded(source, || eval_cached(expr, ctx))?;
        return to_json(source, &value);
    }
    if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
        return Ok(Value::String(source.to_owned()));
    }
    guarded(source, || render_cached(source, ctx)).map(Value::String)
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

    /// Cached templates are keyed by their source; a source ending in `.html` must not switch
    /// MiniJinja's escaping on, and a cached template must see each run's own context.
    #[test]
    fn cached_templates_render_plain_text_against_each_context() {
        let ctx = json!({"input": {"s": "<b>&"}});
        let html = "{{ input.s }} is in page.html";
        for _ in 0..2 {
            assert_eq!(render_str(html, &ctx).unwrap(), "<b>& is in page.html");
        }
        let json_like = "{{ input.s }}.json";
        assert_eq!(render_str(json_like, &ctx).unwrap(), "<b>&.json");
        let other = json!({"input": {"s": "x"}});
        assert_eq!(render_str(html, &other).unwrap(), "x is in page.html");
        assert!(eval_condition("input.s == 'x'", &other).unwrap());
        assert!(!eval_condition("input.s == 'x'", &ctx).unwrap());
    }

    /// Past its budget the cache starts over, and every template still renders, including one
    /// heavier than the whole budget (compiled for its one use).
    #[test]
    fn the_template_cache_is_bounded_in_bytes() {
        let ctx = ctx();
        let budget = CACHE_BYTES.load(Ordering::Relaxed);
        for i in 0..budget / ENTRY_BYTES + 10 {
            let source = format!("{{{{ input.name }}}} {i}");
            assert_eq!(render_str(&source, &ctx).unwrap(), format!("Ada {i}"));
            assert!(eval_condition(&format!("input.n < {i} + 4"), &ctx).unwrap());
            assert!(CACHED_BYTES.get() <= budget);
        }
        let huge = format!(
            "{{{{ input.name }}}}{}",
            "x".repeat(budget / BYTES_PER_SOURCE_BYTE)
        );
        let rendered = render_str(&huge, &ctx).unwrap();
        assert!(rendered.starts_with("Adaxxx") && rendered.len() == huge.len() - 16 + 3);
        assert!(CACHED_BYTES.get() <= budget);
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
