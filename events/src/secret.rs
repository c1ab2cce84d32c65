//! Secrets at rest: every credential is sealed with XChaCha20-Poly1305 before it enters an event.
//!
//! The key comes from `HANGAR_SECRET_KEY` (base64 of 32 bytes) or a key file the server generates
//! in its data directory with mode 0600. A sealed value is a string `enc:v2:<base64 nonce||ct>`,
//! so redaction can recognise one anywhere in a JSON document without knowing its schema.
//!
//! Each value is sealed for a [`Place`] (its agent, connection, member, field and destination),
//! bound in as the AEAD's associated data: copied anywhere else in the log, it does not open.
//! Values sealed before places existed (`enc:v1:`) open without one; see `docs/security.md`.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Sealed with its [`Place`] as associated data: what every seal writes.
const PREFIX: &str = "enc:v2:";
/// Sealed without associated data, by builds before places were bound. Still opened, anywhere,
/// because logs on disk hold them in events that can never be rewritten.
const PREFIX_V1: &str = "enc:v1:";
const NONCE_LEN: usize = 24;
/// What every secret looks like in a response.
pub const REDACTED: &str = "***";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("HANGAR_SECRET_KEY must be the base64 encoding of exactly 32 bytes")]
    BadKey,
    #[error("secret key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "a sealed secret could not be opened: another key, altered data, or sealed for another place"
    )]
    Open,
}

/// A secret as stored: ciphertext only. It deliberately has no `Display`, and its `Debug` prints
/// nothing of the value, so it cannot slip into a log line.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(String);

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealed(***)")
    }
}

impl Sealed {
    pub fn is_sealed_text(s: &str) -> bool {
        s.starts_with(PREFIX) || s.starts_with(PREFIX_V1)
    }

    /// Whether this value was sealed before places were bound, and so opens at any place.
    pub fn is_unbound(&self) -> bool {
        self.0.starts_with(PREFIX_V1)
    }
}

/// Where a sealed value belongs. Its canonical JSON (keys sorted, no whitespace) is the seal's
/// associated data, so the value opens only where it was sealed for: moved by someone who can
/// rewrite and re-hash the log into another agent, connection, member or field, or left beside
/// a destination edited to one of theirs, it fails to open and is never sent.
///
/// Fields are declared in key order: serde writes them so, which makes the JSON canonical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Place {
    agent: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection: Option<String>,
    /// Where the secret is sent (a connection's `server`, the push `url`), exactly as stored
    /// beside it: a destination may only change together with the secrets sent there, so one
    /// edited on its own leaves them unopenable instead of sending them to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<String>,
    /// `live` for a connection's live-environment credentials; absent for the draft ones (and
    /// for everything sealed before environments existed), so those keep opening where they did.
    /// A draft secret copied over a live one, or the other way, does not open.
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<&'static str>,
    field: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    member: Option<String>,
}

impl Place {
    /// Field `field` (`auth.token`, `auth.pairs.<name>`…) of connection `connection`'s team
    /// credentials, sent to `server`.
    pub fn team(agent: Uuid, connection: &str, server: &str, field: &str) -> Place {
        Place {
            agent,
            connection: Some(connection.to_owned()),
            destination: Some(server.to_owned()),
            environment: None,
            field: field.to_owned(),
            member: None,
        }
    }

    /// The same place in the live environment: where a connection's (or a member's) live
    /// credentials are sealed.
    pub fn live(self) -> Place {
        Place {
            environment: Some("live"),
            ..self
        }
    }

    /// Field `field` of member `member`'s own credentials for connection `connection`, sent to
    /// `server`.
    pub fn member(agent: Uuid, connection: &str, server: &str, member: &str, field: &str) -> Place {
        Place {
            member: Some(member.to_owned()),
            ..Place::team(agent, connection, server, field)
        }
    }

    /// The push `async.token`, sent to the push `url` (none while no url is set).
    pub fn push_token(agent: Uuid, url: Option<&str>) -> Place {
        Place {
            agent,
            connection: None,
            destination: url.map(str::to_owned),
            environment: None,
            field: "async.token".to_owned(),
            member: None,
        }
    }

    /// Field `field` (`token`, `credentials`) of an A2A task's push config, sent to `url`.
    pub fn a2a_push(agent: Uuid, url: &str, field: &str) -> Place {
        Place {
            agent,
            connection: None,
            destination: Some(url.to_owned()),
            environment: None,
            field: format!("a2a.push.{field}"),
            member: None,
        }
    }

    /// The agent's push signing secret: it signs pushes and is never sent.
    pub fn signing_secret(agent: Uuid) -> Place {
        Place {
            agent,
            connection: None,
            destination: None,
            environment: None,
            field: "signing_secret".to_owned(),
            member: None,
        }
    }

    fn associated_data(&self) -> Vec<u8> {
        // Strings, a uuid and options of strings always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Seals and opens secrets with the server's key.
#[derive(Clone)]
pub struct Cipher {
    aead: XChaCha20Poly1305,
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher(***)")
    }
}

impl Cipher {
    pub fn from_key(key: &[u8; 32]) -> Self {
        Cipher {
            aead: XChaCha20Poly1305::new(key.into()),
        }
    }

    pub fn from_base64(text: &str) -> Result<Self, Error> {
        let bytes = B64.decode(text.trim()).map_err(|_| Error::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| Error::BadKey)?;
        Ok(Self::from_key(&key))
    }

    /// The key from `env_key` if given, else from `dir/secret.key`, generated on first use.
    pub fn load(env_key: Option<&str>, dir: &Path) -> Result<Self, Error> {
        if let Some(k) = env_key {
            return Self::from_base64(k);
        }
        let path = dir.join("secret.key");
        let io = |source| Error::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_base64(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                write_private(&path, B64.encode(key).as_bytes()).map_err(io)?;
                Ok(Self::from_key(&key))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Seals `plaintext` for `place`: it opens only there.
    pub fn seal(&self, plaintext: &str, place: &Place) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = place.associated_data();
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: &aad,
        };
        // Encryption with a valid key and a fresh nonce cannot fail for inputs of this size.
        let ct = self
            .aead
            .encrypt(XNonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Sealed(format!("{PREFIX}{}", B64.encode(out)))
    }

    /// Opens a field that older builds stored in plaintext (a Basic-auth username): a value that
    /// is not sealed text is that old plaintext. Only for such fields — for one that was always
    /// sealed, accepting plaintext would let an edited log swap a secret for a value of its
    /// choosing.
    pub fn open_or_plaintext(&self, stored: &Sealed, place: &Place) -> Result<String, Error> {
        if Sealed::is_sealed_text(&stored.0) {
            self.open(stored, place)
        } else {
            Ok(stored.0.clone())
        }
    }

    /// Opens a value sealed for `place`. A value from before places were bound (`enc:v1:`) has
    /// none to check and opens wherever it is found: old logs must keep working, and their events
    /// cannot be re-sealed without breaking the hash chain. A v2 value cannot pass for one (its
    /// tag covers its place), so only secrets sealed before the upgrade can still be moved.
    pub fn open(&self, sealed: &Sealed, place: &Place) -> Result<String, Error> {
        let (b64, aad) = match sealed.0.strip_prefix(PREFIX) {
            Some(b64) => (b64, place.associated_data()),
            None => (
                sealed.0.strip_prefix(PREFIX_V1).ok_or(Error::Open)?,
                Vec::new(),
            ),
        };
        let raw = B64.decode(b64).map_err(|_| Error::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(Error::Open);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let payload = Payload { msg: ct, aad: &aad };
        let pt = self
            .aead
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| Error::Open)?;
        String::from_utf8(pt).map_err(|_| Error::Open)
    }
}

/// Writes a file only its owner can read, creating it exclusively so two servers starting at once
/// cannot each write a different key.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Replaces every sealed value in a JSON document with `***`, and the Basic-auth usernames that
/// events from before they were sealed hold in plaintext (any `username` beside
/// `"type": "basic"`), so an old log shows no more than a new one.
pub fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if Sealed::is_sealed_text(s) => *s = REDACTED.to_owned(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        serde_json::Value::Object(map) => {
            if map.get("type").and_then(|t| t.as_str()) == Some("basic") {
                if let Some(username @ serde_json::Value::String(_)) = map.get_mut("username") {
                    *username = serde_json::Value::String(REDACTED.to_owned());
                }
            }
            map.values_mut().for_each(redact_json)
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: Uuid = Uuid::from_u128(0x0194_6a1b_2c00_7000_8000_0000_0000_00a1);
    const OTHER_AGENT: Uuid = Uuid::from_u128(0x0194_6a1b_2c00_7000_8000_0000_0000_00b2);

    fn token_place() -> Place {
        Place::team(
            AGENT,
            "weather",
            "https://api.weather.example",
            "auth.token",
        )
    }

    /// Seals as builds before places did (`enc:v1:`, no associated data): the format of every
    /// secret in logs written by them.
    fn seal_v1(c: &Cipher, plaintext: &str) -> Sealed {
        let nonce = [5u8; NONCE_LEN];
        let ct = c
            .aead
            .encrypt(XNonce::from_slice(&nonce), plaintext.as_bytes())
            .expect("encrypts");
        Sealed(format!(
            "{PREFIX_V1}{}",
            B64.encode([&nonce[..], &ct].concat())
        ))
    }

    #[test]
    fn seal_open_round_trip_and_no_plaintext() {
        let c = Cipher::from_key(&[7; 32]);
        let s = c.seal("hunter2-very-secret", &token_place());
        let text = serde_json::to_string(&s).expect("serializes");
        assert!(!text.contains("hunter2"));
        assert!(text.starts_with("\"enc:v2:"), "{text}");
        assert!(!s.is_unbound());
        assert_eq!(
            c.open(&s, &token_place()).expect("opens"),
            "hunter2-very-secret"
        );
        assert_ne!(
            c.seal("x", &token_place()),
            c.seal("x", &token_place()),
            "nonces differ"
        );
        assert_eq!(format!("{s:?}"), "Sealed(***)");
    }

    #[test]
    fn wrong_key_cannot_open() {
        let s = Cipher::from_key(&[1; 32]).seal("abc", &token_place());
        assert!(Cipher::from_key(&[2; 32]).open(&s, &token_place()).is_err());
    }

    /// The associated data as `docs/storage.md` states it, byte for byte: changing it would
    /// leave every secret sealed since unopenable.
    #[test]
    fn a_place_is_its_canonical_json() {
        let member = Place::member(AGENT, "crm", "https://crm.example", "alice", "auth.key");
        assert_eq!(
            String::from_utf8(member.associated_data()).expect("utf-8"),
            r#"{"agent":"01946a1b-2c00-7000-8000-0000000000a1","connection":"crm","destination":"https://crm.example","field":"auth.key","member":"alice"}"#
        );
        let live = Place::team(AGENT, "crm", "https://crm.example", "auth.token").live();
        assert_eq!(
            String::from_utf8(live.associated_data()).expect("utf-8"),
            r#"{"agent":"01946a1b-2c00-7000-8000-0000000000a1","connection":"crm","destination":"https://crm.example","environment":"live","field":"auth.token"}"#
        );
        assert_eq!(
            String::from_utf8(Place::signing_secret(AGENT).associated_data()).expect("utf-8"),
            r#"{"agent":"01946a1b-2c00-7000-8000-0000000000a1","field":"signing_secret"}"#
        );
        assert_eq!(
            String::from_utf8(Place::push_token(AGENT, None).associated_data()).expect("utf-8"),
            r#"{"agent":"01946a1b-2c00-7000-8000-0000000000a1","field":"async.token"}"#
        );
    }

    /// A sealed value copied anywhere else — another agent, connection, member, field or
    /// destination, or another kind of place — does not open there.
    #[test]
    fn a_moved_value_does_not_open() {
        let c = Cipher::from_key(&[7; 32]);
        let (server, url) = ("https://crm.example", "https://hooks.example/h");
        let alice = Place::member(AGENT, "crm", server, "alice", "auth.token");
        let cases = [
            (
                "agent",
                alice.clone(),
                Place::member(OTHER_AGENT, "crm", server, "alice", "auth.token"),
            ),
            (
                "connection",
                alice.clone(),
                Place::member(AGENT, "crm-2", server, "alice", "auth.token"),
            ),
            (
                "member",
                alice.clone(),
                Place::member(AGENT, "crm", server, "mallory", "auth.token"),
            ),
            (
                "field",
                Place::team(AGENT, "crm", server, "auth.password"),
                Place::team(AGENT, "crm", server, "auth.username"),
            ),
            (
                "key_value pair",
                Place::team(AGENT, "vault", server, "auth.pairs.tenant"),
                Place::team(AGENT, "vault", server, "auth.pairs.X-Forward"),
            ),
            (
                "server",
                Place::team(AGENT, "crm", server, "auth.token"),
                Place::team(AGENT, "crm", "https://attacker.example", "auth.token"),
            ),
            (
                "draft to live",
                Place::team(AGENT, "crm", server, "auth.token"),
                Place::team(AGENT, "crm", server, "auth.token").live(),
            ),
            ("live to draft", alice.clone().live(), alice.clone()),
            (
                "member to team",
                alice.clone(),
                Place::team(AGENT, "crm", server, "auth.token"),
            ),
            (
                "push url",
                Place::push_token(AGENT, Some(url)),
                Place::push_token(AGENT, Some("https://attacker.example/h")),
            ),
            (
                "push token to agent",
                Place::push_token(AGENT, Some(url)),
                Place::push_token(OTHER_AGENT, Some(url)),
            ),
            (
                "signing secret to agent",
                Place::signing_secret(AGENT),
                Place::signing_secret(OTHER_AGENT),
            ),
            (
                "signing secret to push token",
                Place::signing_secret(AGENT),
                Place::push_token(AGENT, None),
            ),
        ];
        // Every case is tried before failing, so a failure names each place that leaked.
        let opened_elsewhere: Vec<&str> = cases
            .iter()
            .filter(|(what, sealed_for, moved_to)| {
                let s = c.seal("the-secret", sealed_for);
                assert_eq!(c.open(&s, sealed_for).expect(what), "the-secret");
                c.open(&s, moved_to).is_ok() || c.open_or_plaintext(&s, moved_to).is_ok()
            })
            .map(|(what, _, _)| *what)
            .collect();
        assert!(
            opened_elsewhere.is_empty(),
            "opened after a move across {opened_elsewhere:?}"
        );
    }

    /// Values sealed before places were bound keep opening; a v2 value relabelled as v1 (to
    /// shed its place) does not, since its tag covers the place.
    #[test]
    fn old_unbound_values_still_open_and_new_ones_cannot_pass_for_them() {
        let c = Cipher::from_key(&[7; 32]);
        let old = seal_v1(&c, "from-an-old-log");
        assert!(old.is_unbound());
        assert!(Sealed::is_sealed_text(&old.0));
        assert_eq!(
            c.open(&old, &token_place()).expect("opens"),
            "from-an-old-log"
        );
        assert_eq!(
            c.open_or_plaintext(&old, &token_place()).expect("opens"),
            "from-an-old-log"
        );
        let new = c.seal("bound", &token_place());
        let relabelled = Sealed(new.0.replacen(PREFIX, PREFIX_V1, 1));
        assert!(c.open(&relabelled, &token_place()).is_err());
        let mut v = serde_json::json!({"old": old, "new": new});
        redact_json(&mut v);
        assert_eq!(v, serde_json::json!({"old": "***", "new": "***"}));
    }

    #[test]
    fn key_file_is_generated_once_and_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Cipher::load(None, dir.path()).expect("generates");
        let b = Cipher::load(None, dir.path()).expect("loads");
        let place = token_place();
        assert_eq!(b.open(&a.seal("v", &place), &place).expect("same key"), "v");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("secret.key"))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn redaction_finds_nested_sealed_values() {
        let c = Cipher::from_key(&[3; 32]);
        let mut v = serde_json::json!({"a": [{"k": c.seal("s", &token_place())}], "b": "plain"});
        redact_json(&mut v);
        assert_eq!(v, serde_json::json!({"a": [{"k": "***"}], "b": "plain"}));
    }

    #[test]
    fn old_plaintext_usernames_open_as_themselves_and_are_redacted() {
        let c = Cipher::from_key(&[3; 32]);
        let place = Place::team(AGENT, "legacy", "https://legacy.example", "auth.username");
        let old = Sealed("svc".into());
        assert_eq!(c.open_or_plaintext(&old, &place).expect("plaintext"), "svc");
        assert!(
            c.open(&old, &place).is_err(),
            "never for fields that were always sealed"
        );
        let new = c.seal("svc", &place);
        assert_eq!(c.open_or_plaintext(&new, &place).expect("opens"), "svc");
        let mut v = serde_json::json!({"auth": {"type": "basic", "username": "svc",
                                                "password": c.seal("pw", &place)},
                                       "other": {"type": "bearer", "username": "kept"}});
        redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"auth": {"type": "basic", "username": "***", "password": "***"},
                               "other": {"type": "bearer", "username": "kept"}})
        );
    }
}
