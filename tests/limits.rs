//! Bounded work per request (API.md, "Changes to v1"): what one request may make the server
//! inflate, wait for, keep or build. Each test names the exhaustion it guards against.

mod common;

use std::io::Write;

use common::{valid_spec, Server, TOKEN};
use serde_json::{json, Value};

/// Sends `body` as is (bytes, not a string) with the admin token and `headers`.
fn send_bytes(s: &Server, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let mut req = ureq::post(&format!("{}{path}", s.base))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .set("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {path}: transport error {e}"),
    };
    let status = resp.status();
    (status, resp.into_json().unwrap_or(Value::Null))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// Guards against decompression bombs: actix-web inflated a gzip body before the 4 MiB cap saw
/// it, so 1–3.5 MB on the wire cost 0.3–0.5 GB of memory. A compressed body is refused before it
/// is read, whatever route takes it, and nothing is written.
#[test]
fn compressed_bodies_are_refused_with_415() {
    let s = Server::start();
    let spec = valid_spec("Zipped").to_string();
    let (status, body) = send_bytes(
        &s,
        "/v1/agents",
        &[("Content-Encoding", "gzip")],
        &gzip(spec.as_bytes()),
    );
    assert_eq!(status, 415, "{body}");
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    assert_eq!(body["error"]["details"]["field"], "Content-Encoding");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("Content-Encoding: gzip"), "{message}");
    assert_eq!(s.get("/v1/agents")["agents"], json!([]), "nothing created");

    // A bomb: 64 MiB of spaces (valid JSON whitespace around `{}`) in about 64 KB.
    let mut bomb = vec![b' '; 64 << 20];
    bomb.extend_from_slice(b"{\"input\": {}}");
    let bomb = gzip(&bomb);
    let id = s.create(&valid_spec("Target"));
    assert_eq!(
        s.post(&format!("/v1/agents/{id}/deploy"), &json!({}))
            .status,
        200
    );
    for encoding in [
        "gzip",
        "deflate",
        "br",
        "zstd",
        "identity, gzip",
        "x-custom",
    ] {
        let (status, body) = send_bytes(
            &s,
            &format!("/v1/agents/{id}/invoke"),
            &[("Content-Encoding", encoding)],
            &bomb,
        );
        assert_eq!(status, 415, "{encoding}: {body}");
        assert_eq!(body["error"]["code"], "unsupported_media_type");
    }

    // `identity` is no encoding at all.
    let (status, body) = send_bytes(
        &s,
        "/v1/agents",
        &[("Content-Encoding", "identity")],
        spec.as_bytes(),
    );
    assert_eq!(status, 201, "{body}");
}
