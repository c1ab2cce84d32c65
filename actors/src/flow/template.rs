//! Templates over the run's context `{input, nodes: {ID: output}}`, with MiniJinja.
//!
//! A JSON template is rendered string by string. A string that is exactly one `{{ expr }}` keeps
//! the expression's JSON type (`"{{ input.n }}"` with `n = 3` is the number 3), so a flow can pass
//! objects and numbers between nodes without quoting them; every other string renders to text.
//!
//! Templates are written by agent authors and run inside the server, so the engine is locked
//! down: it has no loader (no `include` or `import` can read a file) and runs on fuel, so a loop
//! that would never end stops with an error instead. Fuel counts instructions, not what one
//! instruction builds (`s ~ s` doubles a string, `"x" * n` allocates `n` bytes), so each render
//! also runs on a budget of text it may build ([`BUILD_BUDGET_BYTES`], MiniJinja's
//! `budget` module, a patch of Hangar's: `vendor/minijinja/HANGAR.md`), and its output is held to
//! [`MAX_OUTPUT_BYTES`]. Either failure is [`TemplateError::too_large`], which fails the node with
//! `template_too_large`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::LocalKey;

use minijinja::{AutoEscape, Environment, Expression};
use serde_json::Value;

/// Instructions one render or expression may execute; far above what any sane template needs.
const FUEL: u64 = 100_000;
/// How much of a template's source an error quotes.
const QUOTE_CHARS: usize = 120;
/// The most one template may render: a node's output (all its strings together), a prompt, a
/// query, a tool path or body.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// The most text one render may build along the way (strings, values printed, sequence items at
/// 8 bytes each): room for a few copies of the largest output, none for gigabytes.
pub const BUILD_BUDGET_BYTES: usize = 16 * 1024 * 1024;

/// A template that could not be compiled or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template `{template}` failed: {reason}")]
pub struct TemplateError {
    /// The template's source, shortened, so an author can find it in the flow.
    pub template: String,
    /// What went wrong, in MiniJinja's words (kind, detail, line).
    pub reason: String,
    /// Whether it failed for building too much ([`MAX_OUTPUT_BYTES`], [`BUILD_BUDGET_BYTES`]).
    pub too_large: bool,
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
            too_large: false,
        }
    }

    fn too_large(source: &str, reason: String) -> Self {
        TemplateError {
            template: quote(source),
            reason,
            too_large: true,
        }
    }

    /// The code a node fails with: `template_too_large` or `template_error`.
    pub fn code(&self) -> &'static str {
        if self.too_large {
            "template_too_large"
        } else {
            "template_error"
        }
    }
}

/// A rendered output over [`MAX_OUTPUT_BYTES`].
fn output_too_large(source: &str, bytes: Option<usize>) -> TemplateError {
    let size = bytes.map_or_else(|| "more".into(), |b| format!("{b} bytes"));
    TemplateError::too_large(
        source,
        format!("its output is {size}; a template renders at most {MAX_OUTPUT_BYTES} bytes"),
    )
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
    // `debug()` prints the engine's state, and the thread's compiled-template cache is shared by
    // every agent that runs on the thread: one agent's template could read the others' sources
    // (their prompts, instructions, literal values). Nothing in a flow needs it.
    env.remove_global("debug");
    env
}

/// A tool path template's environment: every value a `{{ }}` writes is percent-encoded, so
/// caller input lands in the URL as data, one path segment or one query value, and can never add
/// a `/`, `?`, `&`, `#` or `..` of its own (the contract's "Changes to v1").
fn new_path_env() -> Environment<'static> {
    let mut env = new_env();
    env.set_formatter(|out, _state, value| {
        // As the default formatter writes it (undefined is empty), then encoded.
        let text = if value.is_undefined() {
            String::new()
        } else {
            value.to_string()
        };
        out.write_str(&percent_encode(&text))
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()))
    });
    env
}

/// Every byte but RFC 3986's unreserved characters as `%XX`: safe as a path segment and as a
/// query value alike.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// What one compiled template or expression is taken to weigh: a fixed part plus a multiple of
/// its source. Measured with a counting allocator: ~12 KiB for a one-line template or expression,
/// ~7× the source for a 17 KiB one; rounded up, so the budget errs on the safe side.
const ENTRY_BYTES: usize = 16 * 1024;
const BYTES_PER_SOURCE_BYTE: usize = 8;

/// The memory each of one thread's caches (templates, tool path templates, expressions) may
/// take, by that weight. A count alone would not bound memory: an author may write templates of
/// megabytes. `hangar serve` sets it from `--cache-mb` ([`set_cache_bytes`]).
static CACHE_BYTES: AtomicUsize = AtomicUsize::new(4 << 20);

/// Sets the budget of each of a thread's template caches, in bytes.
pub fn set_cache_bytes(per_cache: usize) {
    CACHE_BYTES.store(per_cache, Ordering::Relaxed);
}

fn weight(source: &str) -> usize {
    ENTRY_BYTES.saturating_add(source.len().saturating_mul(BYTES_PER_SOURCE_BYTE))
}

/// Compiled templates of one flavour, by source, and the weight of what they hold.
struct Cache {
    env: Environment<'static>,
    bytes: usize,
    new: fn() -> Environment<'static>,
}

impl Cache {
    fn new(new: fn() -> Environment<'static>) -> RefCell<Cache> {
        RefCell::new(Cache {
            env: new(),
            bytes: 0,
            new,
        })
    }

    /// Makes room for `source`: if it would not fit, the cache starts over (a bound, not an
    /// eviction policy: a server's flows use far less). `false` if it alone weighs more than the
    /// budget; it is then compiled for this one use.
    fn make_room(&mut self, source: &str) -> bool {
        let budget = CACHE_BYTES.load(Ordering::Relaxed);
        let w = weight(source);
        if w > budget {
            return false;
        }
        if self.bytes.saturating_add(w) > budget {
            self.env = (self.new)();
            self.bytes = 0;
        }
        self.bytes += w;
        true
    }
}

// Compiled templates and expressions by source, per thread (each arbiter runs its own flows), so
// a flow's templates are parsed once, not on every run: parsing was most of a render in a profile
// of sync calls. Per thread, because a compiled template borrows its environment.
thread_local! {
    static TEMPLATES: RefCell<Cache> = Cache::new(new_env);
    static PATH_TEMPLATES: RefCell<Cache> = Cache::new(new_path_env);
    static EXPRESSIONS: RefCell<HashMap<String, Expression<'static, 'static>>> =
        RefCell::new(HashMap::new());
    /// The weight of what `EXPRESSIONS` holds.
    static EXPRESSION_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// Renders template `source` from `cache`, compiling it on first use in this thread.
fn render_cached<S: serde::Serialize>(
    cache: &'static LocalKey<RefCell<Cache>>,
    source: &str,
    ctx: S,
) -> Result<String, minijinja::Error> {
    cache.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Ok(compiled) = cache.env.get_template(source) {
            return compiled.render(ctx);
        }
        if !cache.make_room(source) {
            return (cache.new)().render_str(source, ctx);
        }
        cache
            .env
            .add_template_owned(source.to_owned(), source.to_owned())?;
        cache.env.get_template(source)?.render(ctx)
    })
}

/// Evaluates expression `expr`, compiling it on first use in this thread.
fn eval_cached<S: serde::Serialize>(
    expr: &str,
    ctx: S,
) -> Result<minijinja::Value, minijinja::Error> {
    EXPRESSIONS.with(|expressions| {
        let mut expressions = expressions.borrow_mut();
        if let Some(compiled) = expressions.get(expr) {
            return compiled.eval(ctx);
        }
        let (budget, w) = (CACHE_BYTES.load(Ordering::Relaxed), weight(expr));
        if w > budget {
            return env().compile_expression(expr)?.eval(ctx);
        }
        if EXPRESSION_BYTES.get().saturating_add(w) > budget {
            expressions.clear();
            EXPRESSION_BYTES.set(0);
        }
        let compiled = env().compile_expression_owned(expr.to_owned())?;
        let value = compiled.eval(ctx);
        expressions.insert(expr.to_owned(), compiled);
        EXPRESSION_BYTES.set(EXPRESSION_BYTES.get() + w);
        value
    })
}

/// Renders every string inside `value` against `ctx`, keeping the JSON shape. The whole result
/// is held to [`MAX_OUTPUT_BYTES`] as JSON.
pub fn render(value: &Value, ctx: &Value) -> Result<Value, TemplateError> {
    let ctx = minijinja::Value::from_serialize(ctx);
    let rendered = render_value(value, &ctx)?;
    if !fits(&rendered, MAX_OUTPUT_BYTES) {
        let source = value.to_string();
        return Err(output_too_large(&source, None));
    }
    Ok(rendered)
}

/// Whether `value` serializes to at most `limit` bytes of JSON. Stops writing at the limit, so a
/// value that would print as gigabytes (a sequence repeating one large string) costs no more.
fn fits<T: serde::Serialize + ?Sized>(value: &T, limit: usize) -> bool {
    struct Capped(usize);
    impl std::io::Write for Capped {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if buf.len() > self.0 {
                return Err(std::io::ErrorKind::FileTooLarge.into());
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    match serde_json::to_writer(&mut Capped(limit), value) {
        Ok(()) => true,
        Err(e) => !e.is_io(),
    }
}

/// Runs the template engine on `source`, on a budget of [`BUILD_BUDGET_BYTES`]. Drafts saved
/// before the write-time guards (and previews, which run unvalidated drafts) can reach inputs on
/// which MiniJinja panics; a panic must fail the node, not the executor.
fn guarded<T>(
    source: &str,
    f: impl FnOnce() -> Result<T, minijinja::Error>,
) -> Result<T, TemplateError> {
    let budgeted = || minijinja::budget::with_budget(BUILD_BUDGET_BYTES, f);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(budgeted)) {
        // Spent, whatever the result: past the budget, text is cut short rather than failed
        // where MiniJinja cannot return an error.
        Ok((_, true)) => Err(TemplateError::too_large(
            source,
            format!(
                "it builds more than {BUILD_BUDGET_BYTES} bytes of text along the way (a string \
                 repeated or doubled, a long sequence printed)"
            ),
        )),
        Ok((result, false)) => result.map_err(|e| TemplateError::new(source, &e)),
        Err(_) => Err(TemplateError {
            template: quote(source),
            reason: "the template engine could not process this template".into(),
            too_large: false,
        }),
    }
}

/// Renders one template to text, at most [`MAX_OUTPUT_BYTES`].
pub fn render_str(source: &str, ctx: &Value) -> Result<String, TemplateError> {
    capped(
        source,
        guarded(source, || render_cached(&TEMPLATES, source, ctx))?,
    )
}

/// Renders a tool's `path` template: its literal text as written, every interpolated value
/// percent-encoded ([`percent_encode`]). Whether the result is a path Hangar will send is the
/// caller's check (`..` segments, `#`, staying on the connection's server).
pub fn render_path(source: &str, ctx: &Value) -> Result<String, TemplateError> {
    capped(
        source,
        guarded(source, || render_cached(&PATH_TEMPLATES, source, ctx))?,
    )
}

/// `text` if it is at most [`MAX_OUTPUT_BYTES`].
fn capped(source: &str, text: String) -> Result<String, TemplateError> {
    if text.len() > MAX_OUTPUT_BYTES {
        return Err(output_too_large(source, Some(text.len())));
    }
    Ok(text)
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
    let text = guarded(source, || render_cached(&TEMPLATES, source, ctx))?;
    capped(source, text).map(Value::String)
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
    // Measured before it is built: `{{ [input.doc] * 100000 }}` is one small value inside
    // MiniJinja and 100,000 copies of the document as JSON.
    if !fits(value, MAX_OUTPUT_BYTES) {
        return Err(output_too_large(source, None));
    }
    serde_json::to_value(value).map_err(|e| TemplateError {
        template: quote(source),
        reason: format!("the value cannot be turned into JSON: {e}"),
        too_large: false,
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

    /// Past its budget a cache starts over, and every template still renders, including one
    /// heavier than the whole budget (compiled for its one use).
    #[test]
    fn the_template_caches_are_bounded_in_bytes() {
        let ctx = ctx();
        let budget = CACHE_BYTES.load(Ordering::Relaxed);
        for i in 0..budget / ENTRY_BYTES + 10 {
            let source = format!("{{{{ input.name }}}} {i}");
            assert_eq!(render_str(&source, &ctx).unwrap(), format!("Ada {i}"));
            assert!(eval_condition(&format!("{i} + 4 > 3"), &ctx).unwrap());
            assert!(TEMPLATES.with(|c| c.borrow().bytes) <= budget);
            assert!(EXPRESSION_BYTES.get() <= budget);
        }
        // Heavy in source, light in output: a comment.
        let heavy = format!("{{{{ input.name }}}}{{# {} #}}", "x".repeat(budget));
        assert!(render_str(&heavy, &ctx).unwrap().starts_with("Ada"));
        assert!(TEMPLATES.with(|c| c.borrow().bytes) <= budget);
    }

    /// Caller input in a tool path is data: percent-encoded wherever it lands, so it cannot add
    /// a segment, a query parameter or a fragment. The template's own text is kept as written.
    #[test]
    fn tool_paths_encode_every_interpolated_value() {
        let ctx = json!({"input": {"city": "../../../admin/users/delete?confirm=yes#",
                                   "q": "a b&account=team-b/é", "n": 3}});
        let path =
            "/v1/cities/{{ input.city }}/forecast?units=metric&q={{ input.q }}&n={{ input.n }}";
        assert_eq!(
            render_path(path, &ctx).unwrap(),
            "/v1/cities/..%2F..%2F..%2Fadmin%2Fusers%2Fdelete%3Fconfirm%3Dyes%23/forecast\
             ?units=metric&q=a%20b%26account%3Dteam-b%2F%C3%A9&n=3"
        );
        // `safe` does not opt out; undefined is empty; a whole-path expression is one segment.
        assert_eq!(
            render_path("/{{ input.q | safe }}{{ input.missing }}", &ctx).unwrap(),
            "/a%20b%26account%3Dteam-b%2F%C3%A9"
        );
        assert_eq!(
            render_path("{{ input.city }}", &ctx).unwrap(),
            "..%2F..%2F..%2Fadmin%2Fusers%2Fdelete%3Fconfirm%3Dyes%23"
        );
        // The same source elsewhere is plain text: the two caches do not mix.
        assert_eq!(
            render_str("/{{ input.q }}", &ctx).unwrap(),
            "/a b&account=team-b/é"
        );
        assert_eq!(percent_encode("AZaz09-._~"), "AZaz09-._~");
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

    /// `debug()` would dump the thread's template cache: the sources of other agents' templates.
    #[test]
    fn debug_is_not_available_to_templates() {
        let ctx = ctx();
        let other_agents = "{{ input.name }} -- another agent's prompt, not for your eyes";
        render_str(other_agents, &ctx).unwrap();
        render_path("/x/{{ input.name }}?secret-path-template", &ctx).unwrap();
        for source in ["{{ debug() }}", "x {{ debug() }}", "{{ debug(input) }}"] {
            let err = render(&json!(source), &ctx).expect_err(source);
            assert!(err.reason.contains("debug"), "{source}: {err}");
            let err = render_path(source, &ctx).expect_err(source);
            assert!(!err.to_string().contains("not for your eyes"), "{err}");
        }
        assert!(eval_condition("debug()", &ctx).is_err());
    }

    /// Guards against a template building gigabytes under the fuel limit: each of these built
    /// hundreds of megabytes or more (or allocated it in one go) in a handful of instructions.
    #[test]
    fn templates_that_build_too_much_fail_as_too_large() {
        let ctx = json!({"input": {"s": "x".repeat(300_000), "n": 1_000_000_000_u64}});
        let raw_loop = format!(
            "{{% set c %}}{{% for i in range(10000) %}}{}{{% endfor %}}{{% endset %}}{{{{ c|length }}}}",
            "x".repeat(2000)
        );
        let bombs = [
            // A string doubled 29 times in a loop: 512 MiB from one byte.
            "{% set ns = namespace(s='x') %}{% for i in range(29) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
            // One instruction, 100 MB.
            "{{ ('x' * 100000000)|length }}",
            "{{ input.s * 300 }}",
            // Doubling without a loop, and with `+`.
            "{% set a = input.s ~ input.s %}{% set a = a ~ a %}{% set a = a ~ a %}{% set a = a ~ a %}{% set a = a ~ a %}{% set a = a ~ a %}{{ a|length }}",
            "{% set a = input.s + input.s %}{% set a = a + a %}{% set a = a + a %}{% set a = a + a %}{% set a = a + a %}{% set a = a + a %}{{ a|length }}",
            // A macro doubling its argument as it recurses.
            "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}{% endmacro %}{{ d('x', 40) }}",
            // Captured, so the output cap alone would not see it.
            "{% set c %}{% for i in range(100000) %}{{ input.s }}{% endfor %}{% endset %}{{ c|length }}",
            // Template text emitted in a loop: 2,000 bytes 10,000 times, well within fuel.
            &raw_loop,
            // One value printed as a million copies of a large string.
            "{{ ([input.s] * 1000000)|string|length }}",
            "{{ ([input.s] * 1000000)|join(',')|length }}",
            "{{ range(100000)|join(input.s)|length }}",
            // Widths and counts taken from numbers.
            "{{ 'a\nb'|indent(input.n)|length }}",
            "{{ '%1000000000d'|format(1)|length }}",
            "{{ input.s|replace('x', input.s)|length }}",
            "{{ [1]|batch(10000000000000, 0)|length }}",
            "{{ [1]|slice(10000000000000)|length }}",
            // A lazily doubled sequence walked at once.
            "{% set ns = namespace(l=range(100000)) %}{% for i in range(30) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|list|length }}",
            "{{ (input.s * 20)|list|length }}",
        ];
        for bomb in bombs {
            let err = render_str(bomb, &ctx).expect_err(bomb);
            let bomb = quote(bomb);
            assert!(err.too_large, "{bomb}: {err}");
            assert_eq!(err.code(), "template_too_large");
        }
        // The same through `render` (a JSON template), for a single expression too.
        let err = render(&json!({"a": ["{{ [input.s] * 100000 }}"]}), &ctx).unwrap_err();
        assert_eq!(err.code(), "template_too_large", "{err}");
        let err = eval_condition("(input.s * 300)|length > 1", &ctx).unwrap_err();
        assert_eq!(err.code(), "template_too_large", "{err}");
    }

    /// The output of one template, and of a node's JSON template as a whole, is at most 1 MiB;
    /// below it, large values pass.
    #[test]
    fn outputs_are_held_to_one_mebibyte() {
        let big = "y".repeat(MAX_OUTPUT_BYTES - 100);
        let ctx = json!({"input": {"big": big, "half": "z".repeat(MAX_OUTPUT_BYTES / 2 + 1)}});
        assert_eq!(
            render_str("{{ input.big }}", &ctx).unwrap().len(),
            big.len()
        );
        assert_eq!(render(&json!("{{ input.big }}"), &ctx).unwrap(), json!(big));
        let err = render_str("{{ input.big }}{{ input.big }}", &ctx).unwrap_err();
        assert_eq!(err.code(), "template_too_large", "{err}");
        assert!(err.reason.contains("output"), "{err}");
        let err = render(
            &json!({"a": "{{ input.half }}", "b": "{{ input.half }}"}),
            &ctx,
        )
        .unwrap_err();
        assert_eq!(err.code(), "template_too_large", "{err}");
        // Not too large: an ordinary failure keeps its code.
        let err = render_str("{{ input.big | nosuchfilter }}", &ctx).unwrap_err();
        assert_eq!(err.code(), "template_error");
    }

    /// Ordinary templates stay far below the budget, loops and joins included.
    #[test]
    fn ordinary_templates_fit_the_budget() {
        let items: Vec<Value> = (0..2000)
            .map(|i| json!({"name": format!("item {i}")}))
            .collect();
        let ctx = json!({"input": {"items": items, "doc": "d".repeat(500_000)}});
        let out = render_str(
            "{% for it in input.items %}{{ loop.index }}. {{ it.name | upper }}\n{% endfor %}",
            &ctx,
        )
        .unwrap();
        assert!(out.ends_with("2000. ITEM 1999\n"));
        let out = render_str(
            "{{ input.items | map(attribute='name') | join(', ') }}",
            &ctx,
        )
        .unwrap();
        assert!(out.starts_with("item 0, item 1"));
        let out = render_str("Summarize: {{ input.doc }}", &ctx).unwrap();
        assert_eq!(out.len(), 500_011);
        let out = render_str("{% set ns = namespace(s='') %}{% for it in input.items[:100] %}{% set ns.s = ns.s ~ it.name ~ ';' %}{% endfor %}{{ ns.s|length }}", &ctx).unwrap();
        assert_eq!(out, "790");
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
