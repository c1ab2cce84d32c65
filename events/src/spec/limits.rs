//! Every number the server holds a draft and its settings to, in one place: the ranges that
//! validation and endpoint admission check, and the sizes that [`check`] enforces on every
//! `Create` and `EditDraft` (`docs/api.md`, "Limits", lists them).
//!
//! Ranges are validation problems (a draft out of range is saved but cannot deploy); sizes are
//! refusals (422 naming the field, nothing written), because an oversized draft would be copied
//! into every event, snapshot and run that follows it.

use std::ops::RangeInclusive;

use serde::Serialize;
use serde_json::Value;

use super::{AgentSpec, Flow, NodeKind};
use crate::Rejection;

pub const SYNC_TIMEOUT_S: RangeInclusive<u64> = 60..=300;
pub const ASYNC_TIMEOUT_S: RangeInclusive<u64> = 60..=600;
pub const NODE_TIMEOUT_S: RangeInclusive<u64> = 1..=600;
pub const MODEL_TIMEOUT_S: RangeInclusive<u64> = 1..=600;
pub const MAX_CONCURRENCY: RangeInclusive<u32> = 1..=10_000;
pub const TOP_K: RangeInclusive<u32> = 1..=50;
/// Model calls of one model node that uses tools (`max_steps`).
pub const MAX_STEPS: RangeInclusive<u32> = 1..=20;
/// The model calls one node makes when `max_steps` is not set.
pub const DEFAULT_MAX_STEPS: u32 = 5;
/// Turns of a thread a run remembers (`memory.turns`).
pub const MEMORY_TURNS: RangeInclusive<u32> = 0..=100;

/// The draft serialized as JSON, knowledge contents aside (they have limits of their own).
pub const SPEC_BYTES: usize = 1024 * 1024;
/// Nodes in a flow.
pub const NODES: usize = 500;
/// Any single template string: a prompt, a query, a tool path, a condition, or one string
/// inside an `output`, `args`, `input` or tool `body`.
pub const TEMPLATE_BYTES: usize = 64 * 1024;
/// Operators (`.`, `|`, `+`, `not`, `and`, `(`…) in one `{{ }}` or `{% %}` tag, or in one
/// condition. MiniJinja compiles an expression by recursion as deep as its chain of operators,
/// and some of that recursion (unary `not` and `-`, code generation) has no depth guard: a few
/// thousand operators in one tag overflow a thread's stack and abort the whole server. A real
/// template stays far below this.
pub const TEMPLATE_OPERATORS: usize = 100;
/// One knowledge file's content.
pub const KNOWLEDGE_FILE_BYTES: usize = 1024 * 1024;
/// All knowledge files' contents together.
pub const KNOWLEDGE_TOTAL_BYTES: usize = 4 * 1024 * 1024;
/// Tools of one agent.
pub const TOOLS: usize = 200;
/// Collaborators of one agent.
pub const COLLABORATORS: usize = 50;
/// Any name or id: the agent's name, a node id or target, a tool, connection, knowledge file,
/// collaborator or model name (characters, not bytes).
pub const NAME_CHARS: usize = 200;

/// Refuses a draft that exceeds a size limit, naming the first offending field in the order of
/// the spec (`tools[3].path`, `flow.nodes[7].output.text`). Nothing else is judged here:
/// everything that blocks deploy but not saving is validation's.
pub fn check(spec: &AgentSpec) -> Result<(), Rejection> {
    name(&spec.name, "name")?;
    if let Some(model) = &spec.model {
        name(&model.provider, "model.provider")?;
        name(&model.name, "model.name")?;
        if let Some(id) = &model.connection {
            name(id, "model.connection")?;
        }
    }
    let mut knowledge = 0usize;
    for (i, file) in spec.knowledge.iter().enumerate() {
        name(&file.name, format!("knowledge[{i}].name"))?;
        let bytes = file.content.len();
        if bytes > KNOWLEDGE_FILE_BYTES {
            return Err(Rejection::invalid(
                format!("knowledge[{i}].content"),
                format!(
                    "knowledge file '{}' is {} bytes; a knowledge file is at most {}",
                    file.name,
                    bytes,
                    human(KNOWLEDGE_FILE_BYTES)
                ),
            ));
        }
        knowledge += bytes;
        if knowledge > KNOWLEDGE_TOTAL_BYTES {
            return Err(Rejection::invalid(
                format!("knowledge[{i}].content"),
                format!(
                    "the knowledge files reach {knowledge} bytes with '{}'; together they are at \
                     most {}",
                    file.name,
                    human(KNOWLEDGE_TOTAL_BYTES)
                ),
            ));
        }
    }
    count(spec.tools.len(), TOOLS, "tools", "tools")?;
    for (i, tool) in spec.tools.iter().enumerate() {
        name(&tool.name, format!("tools[{i}].name"))?;
        name(&tool.connection, format!("tools[{i}].connection"))?;
        name(&tool.security, format!("tools[{i}].security"))?;
        name(&tool.method, format!("tools[{i}].method"))?;
        template(&tool.path, format!("tools[{i}].path"))?;
        if let Some(body) = &tool.body {
            templates(body, format!("tools[{i}].body"))?;
        }
        if let Some(description) = &tool.description {
            if description.len() > TEMPLATE_BYTES {
                return Err(Rejection::invalid(
                    format!("tools[{i}].description"),
                    format!(
                        "is {} bytes; a tool's description is at most {}",
                        description.len(),
                        human(TEMPLATE_BYTES)
                    ),
                ));
            }
        }
    }
    count(
        spec.collaborators.len(),
        COLLABORATORS,
        "collaborators",
        "collaborators",
    )?;
    for (i, id) in spec.collaborators.iter().enumerate() {
        name(id, format!("collaborators[{i}]"))?;
    }
    if let Some(flow) = &spec.flow {
        check_flow(flow)?;
    }
    check_total(spec)
}

fn check_flow(flow: &Flow) -> Result<(), Rejection> {
    name(&flow.start, "flow.start")?;
    count(flow.nodes.len(), NODES, "nodes", "flow.nodes")?;
    for (i, node) in flow.nodes.iter().enumerate() {
        let at = format!("flow.nodes[{i}]");
        name(&node.id, format!("{at}.id"))?;
        if let Some(next) = &node.next {
            name(next, format!("{at}.next"))?;
        }
        match &node.kind {
            NodeKind::Transform { output } | NodeKind::End { output } => {
                templates(output, format!("{at}.output"))?
            }
            NodeKind::Model { prompt, tools, .. } => {
                template(prompt, format!("{at}.prompt"))?;
                count(tools.len(), TOOLS, "tools", &format!("{at}.tools"))?;
                for (j, tool) in tools.iter().enumerate() {
                    name(tool, format!("{at}.tools[{j}]"))?;
                }
            }
            NodeKind::Input { prompt } => template(prompt, format!("{at}.prompt"))?,
            NodeKind::Tool { tool, args } => {
                name(tool, format!("{at}.tool"))?;
                templates(args, format!("{at}.args"))?;
            }
            NodeKind::Knowledge { query, .. } => template(query, format!("{at}.query"))?,
            NodeKind::Condition {
                branches,
                otherwise,
            } => {
                for (j, branch) in branches.iter().enumerate() {
                    expression(&branch.when, format!("{at}.branches[{j}].when"))?;
                    name(&branch.next, format!("{at}.branches[{j}].next"))?;
                }
                if let Some(otherwise) = otherwise {
                    name(otherwise, format!("{at}.else"))?;
                }
            }
            NodeKind::Agent { agent, input } => {
                name(agent, format!("{at}.agent"))?;
                templates(input, format!("{at}.input"))?;
            }
        }
    }
    Ok(())
}

/// The whole draft, knowledge contents aside, against [`SPEC_BYTES`]; the field named is the
/// largest part, the one worth trimming.
fn check_total(spec: &AgentSpec) -> Result<(), Rejection> {
    let contents: usize = spec.knowledge.iter().map(|k| json_len(&k.content)).sum();
    let total = json_len(spec).saturating_sub(contents);
    if total <= SPEC_BYTES {
        return Ok(());
    }
    let parts = [
        ("description", json_len(&spec.description)),
        ("instructions", json_len(&spec.instructions)),
        ("voice", json_len(&spec.voice)),
        ("model", json_len(&spec.model)),
        (
            "knowledge",
            json_len(&spec.knowledge).saturating_sub(contents),
        ),
        ("tools", json_len(&spec.tools)),
        ("collaborators", json_len(&spec.collaborators)),
        ("flow", json_len(&spec.flow)),
    ];
    let largest = parts
        .iter()
        .max_by_key(|(_, bytes)| *bytes)
        .map_or("flow", |(field, _)| field);
    Err(Rejection::invalid(
        largest,
        format!(
            "the draft is {total} bytes as JSON (knowledge contents aside), more than {}; \
             `{largest}` is its largest part",
            human(SPEC_BYTES)
        ),
    ))
}

fn name(value: &str, field: impl Into<String>) -> Result<(), Rejection> {
    // Counting stops early: a huge string is judged without walking all of it.
    let chars = value.chars().take(NAME_CHARS + 1).count();
    if chars > NAME_CHARS {
        return Err(Rejection::invalid(
            field,
            format!(
                "is {} characters long; names and ids are at most {NAME_CHARS} characters",
                value.chars().count()
            ),
        ));
    }
    Ok(())
}

fn template(source: &str, field: String) -> Result<(), Rejection> {
    code(source, Code::Template, field)
}

fn expression(source: &str, field: String) -> Result<(), Rejection> {
    code(source, Code::Expression, field.clone())?;
    if panics_the_compiler(source) {
        return Err(Rejection::invalid(
            field,
            "the condition has text after a closing `}}`, which MiniJinja cannot compile: \
             write one expression without braces, e.g. `input.count > 1`",
        ));
    }
    Ok(())
}

/// MiniJinja 2.24's expression lexer panics ("empty lexer stack") on text after a closing
/// `}}`, e.g. `x }} y` (found by tests/fuzz_validator.rs). Validation reports such a condition,
/// but a preview runs the draft without validating it, so it is refused when written.
fn panics_the_compiler(source: &str) -> bool {
    let env = minijinja::Environment::new();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = env.compile_expression(source);
    }))
    .is_err()
}

fn code(source: &str, kind: Code, field: String) -> Result<(), Rejection> {
    if source.len() > TEMPLATE_BYTES {
        return Err(Rejection::invalid(
            field,
            format!(
                "template is {} bytes; a single template string is at most {}",
                source.len(),
                human(TEMPLATE_BYTES)
            ),
        ));
    }
    if let Some(why) = too_many_operators(source, kind) {
        return Err(Rejection::invalid(field, why));
    }
    Ok(())
}

/// How a string is read by MiniJinja.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Text with `{{ }}`, `{% %}` and `{# #}` tags (outputs, prompts, paths, …).
    Template,
    /// One expression, all code (a condition's `when`).
    Expression,
}

/// Why `source` may not be compiled: a tag (or the expression) with more than
/// [`TEMPLATE_OPERATORS`] operators. Validation asks this before compiling any template, so no
/// draft, however it was stored, can overflow the stack.
pub fn too_many_operators(source: &str, kind: Code) -> Option<String> {
    let most = match kind {
        Code::Expression => operators(source),
        Code::Template => tags(source).map(operators).max().unwrap_or(0),
    };
    (most > TEMPLATE_OPERATORS).then(|| {
        let what = match kind {
            Code::Template => "one tag",
            Code::Expression => "the condition",
        };
        format!(
            "{what} has {most} operators; at most {TEMPLATE_OPERATORS} fit in one expression \
             (split it with {{% set %}} steps)"
        )
    })
}

/// The code inside each `{{ }}` and `{% %}` tag (comments skipped; an unclosed tag runs to
/// the end, as MiniJinja would complain about it anyway).
fn tags(source: &str) -> impl Iterator<Item = &str> {
    let mut rest = source;
    std::iter::from_fn(move || loop {
        let open = rest.find('{')?;
        let after = &rest[open + 1..];
        let close = match after.as_bytes().first() {
            Some(b'{') => "}}",
            Some(b'%') => "%}",
            Some(b'#') => "#}",
            _ => {
                rest = after;
                continue;
            }
        };
        let body = &after[1..];
        let (inside, next) = match body.find(close) {
            Some(end) => (&body[..end], &body[end + close.len()..]),
            None => (body, ""),
        };
        rest = next;
        if close != "#}" {
            return Some(inside);
        }
    })
}

/// Operator tokens in a piece of code, string literals skipped. Counts generously (`==` is
/// two, a decimal point is one): only a count far beyond any real expression matters.
fn operators(code: &str) -> usize {
    const WORDS: &[&str] = &["not", "and", "or", "if", "else", "is", "in"];
    let mut count = 0;
    let mut chars = code.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            '\'' | '"' => {
                let mut escaped = false;
                for (_, d) in chars.by_ref() {
                    match d {
                        _ if escaped => escaped = false,
                        '\\' => escaped = true,
                        d if d == c => break,
                        _ => {}
                    }
                }
            }
            '.' | '|' | '[' | '(' | '+' | '-' | '*' | '/' | '%' | '~' | '<' | '>' | '=' | '!' => {
                count += 1
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut end = start + c.len_utf8();
                while let Some(&(i, d)) = chars.peek() {
                    if !(d.is_alphanumeric() || d == '_') {
                        break;
                    }
                    end = i + d.len_utf8();
                    chars.next();
                }
                if WORDS.contains(&&code[start..end]) {
                    count += 1;
                }
            }
            _ => {}
        }
    }
    count
}

/// Every string inside `value`; `path` grows `.key` and `[k]` as validation's paths do.
fn templates(value: &Value, path: String) -> Result<(), Rejection> {
    match value {
        Value::String(source) => template(source, path),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(k, item)| templates(item, format!("{path}[{k}]"))),
        Value::Object(fields) => fields
            .iter()
            .try_for_each(|(key, item)| templates(item, format!("{path}.{key}"))),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

fn count(n: usize, max: usize, what: &str, field: &str) -> Result<(), Rejection> {
    if n > max {
        return Err(Rejection::invalid(
            field,
            format!("has {n} {what}; an agent has at most {max}"),
        ));
    }
    Ok(())
}

/// The length of `value` as compact JSON, counted without building the text.
fn json_len(value: &impl Serialize) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Spec types always serialize: their maps have string keys.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

fn human(bytes: usize) -> String {
    if bytes.is_multiple_of(1024 * 1024) {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::spec::{KnowledgeFile, Node, Tool};

    fn spec() -> AgentSpec {
        serde_json::from_value(json!({
          "name": "Weather helper", "description": "Answers weather questions",
          "model": {"provider": "echo", "name": "echo-1"},
          "tools": [{"name": "forecast", "connection": "weather", "security": "api_key",
                     "path": "/forecast?city={{ args.city }}", "body": {"q": ["{{ args.city }}"]}}],
          "flow": {"start": "greet", "nodes": [
            {"id": "greet", "type": "transform", "output": {"text": "Hello"}, "next": "ask"},
            {"id": "ask", "type": "condition", "branches": [{"when": "true", "next": "done"}]},
            {"id": "done", "type": "end", "output": {"greeting": "{{ nodes.greet.text }}"}}
          ]}
        }))
        .expect("spec parses")
    }

    #[track_caller]
    fn refused(spec: &AgentSpec, field: &str) -> String {
        let err = check(spec).expect_err("over a limit");
        assert_eq!(err.field(), Some(field), "{err}");
        err.to_string()
    }

    fn nodes(spec: &mut AgentSpec) -> &mut Vec<Node> {
        &mut spec.flow.as_mut().expect("flow").nodes
    }

    #[test]
    fn the_example_is_within_every_limit() {
        check(&spec()).expect("within limits");
    }

    #[test]
    fn names_and_ids_are_at_most_200_characters() {
        let mut s = spec();
        s.name = "é".repeat(NAME_CHARS);
        check(&s).expect("200 characters, 400 bytes: fine");
        s.name.push('x');
        let why = refused(&s, "name");
        assert!(why.contains("201 characters"), "{why}");

        let mut s = spec();
        nodes(&mut s)[1].id = "n".repeat(NAME_CHARS + 1);
        refused(&s, "flow.nodes[1].id");
        let mut s = spec();
        nodes(&mut s)[0].next = Some("n".repeat(NAME_CHARS + 1));
        refused(&s, "flow.nodes[0].next");
        let mut s = spec();
        if let NodeKind::Condition { branches, .. } = &mut nodes(&mut s)[1].kind {
            branches[0].next = "n".repeat(NAME_CHARS + 1);
        }
        refused(&s, "flow.nodes[1].branches[0].next");
        let mut s = spec();
        s.tools[0].connection = "c".repeat(NAME_CHARS + 1);
        refused(&s, "tools[0].connection");
        let mut s = spec();
        s.collaborators = vec!["a".into(), "x".repeat(NAME_CHARS + 1)];
        refused(&s, "collaborators[1]");
        let mut s = spec();
        s.flow.as_mut().expect("flow").start = "s".repeat(NAME_CHARS + 1);
        refused(&s, "flow.start");
    }

    #[test]
    fn a_flow_has_at_most_500_nodes() {
        let mut s = spec();
        let end = nodes(&mut s)[2].clone();
        while nodes(&mut s).len() < NODES {
            let mut n = end.clone();
            n.id = format!("n{}", nodes(&mut s).len());
            nodes(&mut s).push(n);
        }
        check(&s).expect("500 nodes");
        nodes(&mut s).push(end);
        let why = refused(&s, "flow.nodes");
        assert!(why.contains("501 nodes"), "{why}");
    }

    #[test]
    fn a_template_is_at_most_64_kib() {
        let big = "x".repeat(TEMPLATE_BYTES + 1);
        let ok = "x".repeat(TEMPLATE_BYTES);
        let mut s = spec();
        nodes(&mut s)[0].kind = NodeKind::Transform {
            output: json!({"list": ["a", ok]}),
        };
        check(&s).expect("exactly 64 KiB");
        nodes(&mut s)[0].kind = NodeKind::Transform {
            output: json!({"list": ["a", big]}),
        };
        let why = refused(&s, "flow.nodes[0].output.list[1]");
        assert!(why.contains("64 KiB"), "{why}");

        let mut s = spec();
        nodes(&mut s)[0].kind = NodeKind::Model {
            prompt: big.clone(),
            tools: vec![],
            max_steps: None,
            history: false,
        };
        refused(&s, "flow.nodes[0].prompt");
        let mut s = spec();
        if let NodeKind::Condition { branches, .. } = &mut nodes(&mut s)[1].kind {
            branches[0].when = big.clone();
        }
        refused(&s, "flow.nodes[1].branches[0].when");
        let mut s = spec();
        s.tools[0].path = big.clone();
        refused(&s, "tools[0].path");
        let mut s = spec();
        s.tools[0].body = Some(json!({"q": [big.clone()]}));
        refused(&s, "tools[0].body.q[0]");
    }

    #[test]
    fn a_tag_or_condition_has_at_most_100_operators() {
        let chain = |n: usize| format!("{{{{ {}1 }}}}", "not ".repeat(n));
        let mut s = spec();
        nodes(&mut s)[0].kind = NodeKind::Model {
            prompt: format!(
                "text - - - {} more text {}",
                chain(TEMPLATE_OPERATORS),
                chain(3)
            ),
            tools: vec![],
            max_steps: None,
            history: false,
        };
        check(&s).expect("100 in one tag; text outside tags does not count");
        nodes(&mut s)[0].kind = NodeKind::Model {
            prompt: format!("{} {}", chain(2), chain(TEMPLATE_OPERATORS + 1)),
            tools: vec![],
            max_steps: None,
            history: false,
        };
        let why = refused(&s, "flow.nodes[0].prompt");
        assert!(why.contains("101 operators"), "{why}");

        let mut s = spec();
        if let NodeKind::Condition { branches, .. } = &mut nodes(&mut s)[1].kind {
            branches[0].when = format!("1{}", "+1".repeat(TEMPLATE_OPERATORS + 1));
        }
        let why = refused(&s, "flow.nodes[1].branches[0].when");
        assert!(why.contains("the condition"), "{why}");

        // Operators inside string literals and comments are text.
        let quoted = format!(
            "{{{{ '{}' ~ \"{}\" }}}}{{# {} #}}",
            "-".repeat(500),
            "|".repeat(500),
            "+".repeat(500)
        );
        assert_eq!(too_many_operators(&quoted, Code::Template), None);
        let filters = format!(
            "{{% set x = y{} %}}",
            "|upper".repeat(TEMPLATE_OPERATORS + 1)
        );
        assert!(too_many_operators(&filters, Code::Template).is_some());
        let unclosed = format!("{{{{ x{}", ".a".repeat(TEMPLATE_OPERATORS + 1));
        assert!(too_many_operators(&unclosed, Code::Template).is_some());
        assert_eq!(operators("not x and y.z | f(1) == 'a+b'"), 7);
    }

    #[test]
    fn a_condition_that_panics_the_compiler_is_refused() {
        let mut s = spec();
        if let NodeKind::Condition { branches, .. } = &mut nodes(&mut s)[1].kind {
            branches[0].when = "x }} y".into();
        }
        let why = refused(&s, "flow.nodes[1].branches[0].when");
        assert!(why.contains("closing `}}`"), "{why}");
        // Other syntax errors are validation's (the draft is saved, deploy is refused).
        if let NodeKind::Condition { branches, .. } = &mut nodes(&mut s)[1].kind {
            branches[0].when = "x ==".into();
        }
        check(&s).expect("saved");
    }

    #[test]
    fn knowledge_files_are_at_most_1_mib_each_and_4_mib_together() {
        let file = |name: &str, bytes: usize| KnowledgeFile {
            name: name.into(),
            content: "k".repeat(bytes),
        };
        let mut s = spec();
        s.knowledge = vec![file("a.md", 10), file("b.md", KNOWLEDGE_FILE_BYTES + 1)];
        let why = refused(&s, "knowledge[1].content");
        assert!(why.contains("'b.md'") && why.contains("1 MiB"), "{why}");

        s.knowledge = (0..4)
            .map(|i| file(&format!("{i}.md"), KNOWLEDGE_FILE_BYTES))
            .collect();
        check(&s).expect("4 MiB exactly; the contents do not count toward the spec's 1 MiB");
        s.knowledge.push(file("4.md", 1));
        let why = refused(&s, "knowledge[4].content");
        assert!(why.contains("4 MiB"), "{why}");
    }

    #[test]
    fn at_most_200_tools_and_50_collaborators() {
        let mut s = spec();
        let tool: Tool = s.tools[0].clone();
        s.tools = vec![tool.clone(); TOOLS];
        check(&s).expect("200 tools");
        s.tools.push(tool);
        refused(&s, "tools");

        let mut s = spec();
        s.collaborators = vec!["x".into(); COLLABORATORS];
        check(&s).expect("50 collaborators");
        s.collaborators.push("x".into());
        refused(&s, "collaborators");
    }

    #[test]
    fn the_whole_draft_is_at_most_1_mib_and_its_largest_part_is_named() {
        let mut s = spec();
        s.instructions = "i".repeat(SPEC_BYTES - 2000);
        check(&s).expect("just under");
        s.instructions.push_str(&"i".repeat(4000));
        let why = refused(&s, "instructions");
        assert!(why.contains("1 MiB"), "{why}");

        // Many nodes, each within its own limits, can still add up.
        let mut s = spec();
        let end = nodes(&mut s)[2].clone();
        for i in 0..NODES - 3 {
            let mut n = end.clone();
            n.id = format!("n{i}");
            n.kind = NodeKind::End {
                output: json!({"text": "t".repeat(3000)}),
            };
            nodes(&mut s).push(n);
        }
        refused(&s, "flow");
    }
}
