//! `GET /console`: the console is served by the binary itself, whole (every module the page
//! loads is there), from this origin only, under a policy that forbids anything else. What the
//! console does in a browser is tested in `tests/console/` (Playwright and Chromium, `./x test
//! console`).

mod common;

use std::collections::BTreeSet;

use common::Server;

struct Got {
    status: u16,
    content_type: String,
    /// Every header, its name in lower case.
    headers: Vec<(String, String)>,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == &name.to_ascii_lowercase())
            .map(|(_, v)| v.clone())
    }
}

fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = ureq::get(&format!("{}{path}", server.base));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let res = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let headers: Vec<(String, String)> = res
        .headers_names()
        .into_iter()
        .filter_map(|n| {
            res.header(&n)
                .map(|v| (n.to_ascii_lowercase(), v.to_owned()))
        })
        .collect();
    Got {
        status: res.status(),
        content_type: res.content_type().to_owned(),
        headers,
        body: res.into_string().unwrap_or_default(),
    }
}

/// What a page or module loads: `src`/`href` attributes and `import … from "…"` specifiers.
fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for marker in ["src=\"", "href=\"", "from \""] {
        let mut rest = text;
        while let Some(i) = rest.find(marker) {
            rest = &rest[i + marker.len()..];
            if let Some(end) = rest.find('"') {
                out.push(rest[..end].to_owned());
            }
        }
    }
    out
}

#[test]
fn the_console_is_served_whole_from_this_origin_without_a_token() {
    let server = Server::start();
    let page = get(&server, "/console", &[]);
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.content_type, "text/html");
    let csp = page.header("content-security-policy").expect("a CSP");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert_eq!(
        page.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(
        page.header("referrer-policy").as_deref(),
        Some("no-referrer")
    );

    // Follow every reference from the page through the modules: each is one of ours, and served.
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = references(&page.body)
        .into_iter()
        .filter(|r| !r.starts_with('#'))
        .collect();
    assert!(todo.contains(&"/console/app.js".to_owned()), "{todo:?}");
    while let Some(reference) = todo.pop() {
        let path = match reference.strip_prefix("./") {
            Some(name) => format!("/console/{name}"),
            None => reference.clone(),
        };
        assert!(
            path.starts_with("/console/") && !path[9..].contains('/'),
            "a reference that is not a file of the console: {reference}"
        );
        if !seen.insert(path.clone()) {
            continue;
        }
        let file = get(&server, &path, &[]);
        assert_eq!(file.status, 200, "{path}: {}", file.body);
        let expected = match path.rsplit('.').next() {
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            Some("svg") => "image/svg+xml",
            other => panic!("{path}: an unexpected kind of file {other:?}"),
        };
        assert_eq!(file.content_type, expected, "{path}");
        if expected == "text/javascript" {
            todo.extend(references(&file.body));
        }
    }
    assert!(seen.len() >= 12, "the page loads every module: {seen:?}");
}

#[test]
fn files_are_revalidated_and_unknown_ones_are_404() {
    let server = Server::start();
    let first = get(&server, "/console/app.js", &[]);
    let etag = first.header("etag").expect("an ETag");
    assert_eq!(first.header("cache-control").as_deref(), Some("no-cache"));
    let again = get(&server, "/console/app.js", &[("If-None-Match", &etag)]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let page = get(&server, "/console", &[("If-None-Match", "\"other\"")]);
    assert_eq!(page.status, 200);

    for path in [
        "/console/nope.js",
        "/console/index.html",
        "/console/..%2Fmain.rs",
    ] {
        let missing = get(&server, path, &[]);
        assert_eq!(missing.status, 404, "{path}");
        assert!(missing.body.contains("\"not_found\""), "{}", missing.body);
    }
}
