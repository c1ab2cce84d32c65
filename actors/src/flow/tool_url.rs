//! The URL a tool call goes to: the connection's `server` joined with the tool's rendered path,
//! refused (`invalid_tool_path`) unless it stays where the connection points.
//!
//! Values interpolated into a path are already percent-encoded ([`super::template::render_path`]),
//! so caller input cannot add a segment, a parameter or a fragment. What is left to check is the
//! path as a whole, literal text included: no `#` (a fragment is never sent, so it could only hide
//! what follows it), no `..` segment — also once percent-decoded, since some servers and proxies
//! decode `%2F` and `%2E` before they normalize — and nothing that takes the request off the
//! connection's scheme, host, port and base path, where its credentials belong.

use awc::http::Uri;
use events::connection::has_user_info;

use super::effects::EffectError;

/// `server` (stored without a trailing slash) joined with `path`, if the result stays on it.
pub fn tool_url(tool: &str, server: &str, path: &str) -> Result<String, EffectError> {
    let refuse = |why: &str| {
        EffectError::new(
            "invalid_tool_path",
            format!("tool '{tool}': the path '{path}' {why}"),
        )
    };
    // Refused when written since; a connection stored before that is refused here instead.
    if has_user_info(server) {
        return Err(EffectError::new(
            "invalid_tool_path",
            format!(
                "tool '{tool}': the connection's server carries user info (user:pass@); \
                 move the credentials into the connection's auth"
            ),
        ));
    }
    if path.contains('#') {
        return Err(refuse("has a '#': a fragment is never sent to the server"));
    }
    let before_query = path.split_once('?').map_or(path, |(p, _)| p);
    let climbs = before_query.split('/').any(|segment| {
        percent_decode(segment)
            .split(['/', '\\'])
            .any(|piece| piece == "..")
    });
    if climbs {
        return Err(refuse(
            "has a '..' segment, which would leave the tool's path on the server",
        ));
    }
    let url = join_url(server, path);
    let leaves = || {
        refuse(&format!(
            "does not stay on the connection's server {server}"
        ))
    };
    let (Ok(base), Ok(full)) = (server.parse::<Uri>(), url.parse::<Uri>()) else {
        return Err(refuse(
            "does not make a valid URL with the connection's server",
        ));
    };
    if base.scheme() != full.scheme() || base.authority() != full.authority() {
        return Err(leaves());
    }
    let base_path = base.path().trim_end_matches('/');
    let under_base = full.path() == base_path
        || full
            .path()
            .strip_prefix(base_path)
            .is_some_and(|rest| rest.starts_with('/'));
    if !under_base {
        return Err(leaves());
    }
    Ok(url)
}

/// The connection's server joined with a tool's path.
fn join_url(server: &str, path: &str) -> String {
    let server = server.trim_end_matches('/');
    if path.is_empty() || path.starts_with('/') || path.starts_with('?') {
        format!("{server}{path}")
    } else {
        format!("{server}/{path}")
    }
}

/// `%XX` decoded (invalid escapes kept as they are), for the `..` check only.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn refused(server: &str, path: &str) -> String {
        let err = tool_url("t", server, path).expect_err("refused");
        assert_eq!(err.code, "invalid_tool_path", "{err}");
        err.message
    }

    #[test]
    fn paths_that_stay_on_the_server_are_joined() {
        let ok = |server, path| tool_url("t", server, path).expect("allowed");
        assert_eq!(
            ok("https://api.example.com", "/a?b=1"),
            "https://api.example.com/a?b=1"
        );
        assert_eq!(
            ok("https://api.example.com", "a"),
            "https://api.example.com/a"
        );
        assert_eq!(ok("https://api.example.com", ""), "https://api.example.com");
        assert_eq!(
            ok("https://api.example.com/v2", "?x=1"),
            "https://api.example.com/v2?x=1"
        );
        assert_eq!(
            ok("http://127.0.0.1:9/v2", "/x/y"),
            "http://127.0.0.1:9/v2/x/y"
        );
        // An encoded value is one segment; dots and slashes inside it are data.
        ok(
            "https://h",
            "/v1/cities/Oslo%2Fforecast%3Fa%3Db/forecast?units=metric",
        );
        ok("https://h", "/files/a..b/c...d?up=../..");
        ok("https://h", "//h/x");
    }

    #[test]
    fn fragments_and_dot_dot_segments_are_refused() {
        assert!(refused("https://h", "/a#b").contains("'#'"));
        for path in [
            "/..",
            "/a/../b",
            "../x",
            "/a/%2e%2E/b",
            "/v1/cities/..%2F..%2Fadmin/forecast",
            "/a/..%5Cadmin",
            "/a\\..\\admin",
        ] {
            assert!(refused("https://h", path).contains("'..'"), "{path}");
        }
    }

    #[test]
    fn a_path_cannot_take_the_request_elsewhere() {
        // Joined after a '/', text that would be user info or a port elsewhere is only a path.
        for path in ["@evil.example/x", ":80/x", ".evil.example/x"] {
            let url = tool_url("t", "https://h:8443", path).expect(path);
            assert!(url.starts_with("https://h:8443/"), "{url}");
        }
        // What an HTTP client could not send as written is refused, not guessed at.
        for path in ["/a b", "/caf\u{e9}"] {
            let err = tool_url("t", "https://h", path).expect_err(path);
            assert_eq!(err.code, "invalid_tool_path", "{path}: {err}");
        }
        assert!(
            tool_url("t", "https://u:p@h", "/x").is_err(),
            "an old server with user info"
        );
        // Under the base path, never beside it.
        assert_eq!(
            tool_url("t", "https://h/v2", "x").expect("ok"),
            "https://h/v2/x"
        );
        let err = tool_url("t", "https://h/v2", "/../v3").expect_err("refused");
        assert_eq!(err.code, "invalid_tool_path");
    }
}
