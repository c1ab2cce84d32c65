//! Secrets at rest: every credential is sealed with XChaCha20-Poly1305 before it enters an event.
//!
//! The key comes from `HANGAR_SECRET_KEY` (base64 of 32 bytes) or a key file the server generates
//! in its data directory with mode 0600. A sealed value is a string `enc:v1:<base64 nonce||ct>`,
//! so redaction can recognise one anywhere in a JSON document without knowing its schema.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "enc:v1:";
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
    #[error("a sealed secret could not be opened: wrong key or altered data")]
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
        s.starts_with(PREFIX)
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

    pub fn seal(&self, plaintext: &str) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        // Encryption with a valid key and a fresh nonce cannot fail for inputs of this size.
        let ct = self
            .aead
            .encrypt(XNonce::from_slice(&nonce), plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Sealed(format!("{PREFIX}{}", B64.encode(out)))
    }

    /// Opens a field that older builds stored in plaintext (a Basic-auth username): a value that
    /// is not sealed text is that old plaintext. Only for such fields — for one that was always
    /// sealed, accepting plaintext would let an edited log swap a secret for a value of its
    /// choosing.
    pub fn open_or_plaintext(&self, stored: &Sealed) -> Result<String, Error> {
        if Sealed::is_sealed_text(&stored.0) {
            self.open(stored)
        } else {
            Ok(stored.0.clone())
        }
    }

    pub fn open(&self, sealed: &Sealed) -> Result<String, Error> {
        let b64 = sealed.0.strip_prefix(PREFIX).ok_or(Error::Open)?;
        let raw = B64.decode(b64).map_err(|_| Error::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(Error::Open);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let pt = self
            .aead
            .decrypt(XNonce::from_slice(nonce), ct)
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

    #[test]
    fn seal_open_round_trip_and_no_plaintext() {
        let c = Cipher::from_key(&[7; 32]);
        let s = c.seal("hunter2-very-secret");
        let text = serde_json::to_string(&s).expect("serializes");
        assert!(!text.contains("hunter2"));
        assert_eq!(c.open(&s).expect("opens"), "hunter2-very-secret");
        assert_ne!(c.seal("x"), c.seal("x"), "nonces differ");
        assert_eq!(format!("{s:?}"), "Sealed(***)");
    }

    #[test]
    fn wrong_key_cannot_open() {
        let s = Cipher::from_key(&[1; 32]).seal("abc");
        assert!(Cipher::from_key(&[2; 32]).open(&s).is_err());
    }

    #[test]
    fn key_file_is_generated_once_and_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Cipher::load(None, dir.path()).expect("generates");
        let b = Cipher::load(None, dir.path()).expect("loads");
        assert_eq!(b.open(&a.seal("v")).expect("same key"), "v");
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
        let mut v = serde_json::json!({"a": [{"k": c.seal("s")}], "b": "plain"});
        redact_json(&mut v);
        assert_eq!(v, serde_json::json!({"a": [{"k": "***"}], "b": "plain"}));
    }

    #[test]
    fn old_plaintext_usernames_open_as_themselves_and_are_redacted() {
        let c = Cipher::from_key(&[3; 32]);
        let old = Sealed("svc".into());
        assert_eq!(c.open_or_plaintext(&old).expect("plaintext"), "svc");
        assert!(
            c.open(&old).is_err(),
            "never for fields that were always sealed"
        );
        let new = c.seal("svc");
        assert_eq!(c.open_or_plaintext(&new).expect("opens"), "svc");
        let mut v = serde_json::json!({"auth": {"type": "basic", "username": "svc",
                                                "password": c.seal("pw")},
                                       "other": {"type": "bearer", "username": "kept"}});
        redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"auth": {"type": "basic", "username": "***", "password": "***"},
                               "other": {"type": "bearer", "username": "kept"}})
        );
    }
}
