//! Endpoint settings: how the deployed endpoints behave. Part of the draft, live at the next deploy.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::egress;
use crate::secret::{Cipher, Place, Sealed, REDACTED};
use crate::spec::limits;
use crate::Rejection;

/// The settings as stored in events and snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointSettings {
    #[serde(default = "default_sync_timeout")]
    pub sync_timeout_s: u64,
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: u32,
    #[serde(default, rename = "async")]
    pub asynchronous: AsyncSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AsyncSettings {
    #[serde(default)]
    pub push_enabled: bool,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub token: Option<Sealed>,
    /// `None` means no time limit.
    #[serde(default = "default_async_timeout")]
    pub timeout_s: Option<u64>,
}

fn default_sync_timeout() -> u64 {
    180
}
fn default_max_concurrency() -> u32 {
    64
}
fn default_async_timeout() -> Option<u64> {
    Some(180)
}

impl Default for EndpointSettings {
    fn default() -> Self {
        EndpointSettings {
            sync_timeout_s: default_sync_timeout(),
            max_concurrency: default_max_concurrency(),
            asynchronous: AsyncSettings::default(),
        }
    }
}

impl Default for AsyncSettings {
    fn default() -> Self {
        AsyncSettings {
            push_enabled: false,
            url: None,
            token: None,
            timeout_s: default_async_timeout(),
        }
    }
}

/// The settings as a client sends them. Absent fields take their defaults; an absent or `"***"`
/// token keeps the stored one, so a client can change other settings without re-sending a secret
/// it was never shown — unless the `url` changes: then the token must be sent again.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct EndpointInput {
    #[serde(default)]
    #[schema(minimum = 60, maximum = 300)]
    pub sync_timeout_s: Option<u64>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    pub max_concurrency: Option<u32>,
    #[serde(default, rename = "async")]
    pub asynchronous: AsyncInput,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct AsyncInput {
    #[serde(default)]
    pub push_enabled: bool,
    #[serde(default)]
    #[schema(pattern = r"^https?://\S+$")]
    pub url: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    /// Absent: the default (180 s); `null`: no time limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 60, maximum = 600)]
    pub timeout_s: Option<Option<u64>>,
}

/// Tells an explicit `null` (`Some(None)`) from an absent field (`None`, via `#[serde(default)]`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl EndpointInput {
    /// Checks ranges and seals the token for agent `agent` and the `url`; `current` supplies the
    /// token kept when none is sent.
    pub fn admit(
        &self,
        current: &EndpointSettings,
        agent: Uuid,
        cipher: &Cipher,
    ) -> Result<EndpointSettings, Rejection> {
        let sync_timeout_s = self.sync_timeout_s.unwrap_or_else(default_sync_timeout);
        if !limits::SYNC_TIMEOUT_S.contains(&sync_timeout_s) {
            return Err(Rejection::invalid(
                "sync_timeout_s",
                format!(
                    "must be between {} and {} seconds",
                    limits::SYNC_TIMEOUT_S.start(),
                    limits::SYNC_TIMEOUT_S.end()
                ),
            ));
        }
        let max_concurrency = self.max_concurrency.unwrap_or_else(default_max_concurrency);
        if !limits::MAX_CONCURRENCY.contains(&max_concurrency) {
            return Err(Rejection::invalid(
                "max_concurrency",
                format!(
                    "must be between {} and {}",
                    limits::MAX_CONCURRENCY.start(),
                    limits::MAX_CONCURRENCY.end()
                ),
            ));
        }
        let a = &self.asynchronous;
        let timeout_s = a.timeout_s.unwrap_or_else(default_async_timeout);
        if let Some(t) = timeout_s {
            if !limits::ASYNC_TIMEOUT_S.contains(&t) {
                return Err(Rejection::invalid(
                    "async.timeout_s",
                    format!(
                        "must be between {} and {} seconds, or null for no limit",
                        limits::ASYNC_TIMEOUT_S.start(),
                        limits::ASYNC_TIMEOUT_S.end()
                    ),
                ));
            }
        }
        if let Some(url) = &a.url {
            if !egress::is_http_url(url) {
                return Err(Rejection::invalid(
                    "async.url",
                    "must be an absolute http:// or https:// URL",
                ));
            }
            if let Some(why) = egress::literal_refusal(url) {
                return Err(Rejection::invalid("async.url", why));
            }
        }
        let token = match a.token.as_deref() {
            None | Some(REDACTED) => {
                // The stored token was given for the stored url: it never follows a new one, or
                // whoever may change the settings could collect it at a host of their own.
                let kept = current.asynchronous.token.clone();
                if kept.is_some() && a.url.is_some() && a.url != current.asynchronous.url {
                    return Err(Rejection::secret_required(
                        "async.token",
                        "the webhook url changed: send the token again with it (the stored \
                         token goes only to the url it was given for)",
                    ));
                }
                kept
            }
            Some("") => None,
            Some(t) => Some(cipher.seal(t, &Place::push_token(agent, a.url.as_deref()))),
        };
        if a.push_enabled {
            if a.url.is_none() {
                return Err(Rejection::invalid(
                    "async.url",
                    "push_enabled needs a webhook url",
                ));
            }
            if token.is_none() {
                return Err(Rejection::invalid(
                    "async.token",
                    "push_enabled needs a token",
                ));
            }
        }
        Ok(EndpointSettings {
            sync_timeout_s,
            max_concurrency,
            asynchronous: AsyncSettings {
                push_enabled: a.push_enabled,
                url: a.url.clone(),
                token,
                timeout_s,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: Uuid = Uuid::from_u128(7);

    fn input(v: serde_json::Value) -> EndpointInput {
        serde_json::from_value(v).expect("parses")
    }

    #[test]
    fn defaults_and_null_timeout() {
        let c = Cipher::from_key(&[0; 32]);
        let cur = EndpointSettings::default();
        let s = input(serde_json::json!({}))
            .admit(&cur, AGENT, &c)
            .expect("ok");
        assert_eq!(s, EndpointSettings::default());
        let s = input(serde_json::json!({"async": {"timeout_s": null}}))
            .admit(&cur, AGENT, &c)
            .expect("ok");
        assert_eq!(s.asynchronous.timeout_s, None);
    }

    #[test]
    fn ranges_name_the_field() {
        let c = Cipher::from_key(&[0; 32]);
        let cur = EndpointSettings::default();
        for (body, field) in [
            (serde_json::json!({"sync_timeout_s": 59}), "sync_timeout_s"),
            (serde_json::json!({"sync_timeout_s": 301}), "sync_timeout_s"),
            (
                serde_json::json!({"async": {"timeout_s": 601}}),
                "async.timeout_s",
            ),
            (serde_json::json!({"max_concurrency": 0}), "max_concurrency"),
            (
                serde_json::json!({"async": {"push_enabled": true, "token": "t"}}),
                "async.url",
            ),
            (
                serde_json::json!({"async": {"push_enabled": true, "url": "http://x"}}),
                "async.token",
            ),
            (
                serde_json::json!({"async": {"url": "http://169.254.169.254/hook"}}),
                "async.url",
            ),
            (
                serde_json::json!({"async": {"url": "http://[::ffff:a9fe:a9fe]/hook"}}),
                "async.url",
            ),
            (
                serde_json::json!({"async": {"url": "https://metadata.google.internal/"}}),
                "async.url",
            ),
            (serde_json::json!({"async": {"url": "hooks"}}), "async.url"),
        ] {
            let err = input(body).admit(&cur, AGENT, &c).expect_err("refused");
            assert_eq!(err.field(), Some(field));
        }
    }

    #[test]
    fn token_is_kept_when_not_resent() {
        let c = Cipher::from_key(&[0; 32]);
        let first = input(serde_json::json!({"async": {"push_enabled": true, "url": "http://127.0.0.1:1/h", "token": "tok"}}))
            .admit(&EndpointSettings::default(), AGENT, &c)
            .expect("ok");
        let second = input(serde_json::json!({"max_concurrency": 3, "async": {"push_enabled": true, "url": "http://127.0.0.1:1/h", "token": "***"}}))
            .admit(&first, AGENT, &c)
            .expect("ok");
        assert_eq!(second.asynchronous.token, first.asynchronous.token);
    }

    /// The stored token never follows a new webhook url: changing the url needs the token again.
    #[test]
    fn a_new_url_needs_the_token_again() {
        let c = Cipher::from_key(&[0; 32]);
        let first = input(serde_json::json!({"async": {"push_enabled": true, "url": "https://hooks.example.com/h", "token": "tok"}}))
            .admit(&EndpointSettings::default(), AGENT, &c)
            .expect("ok");
        for body in [
            serde_json::json!({"async": {"push_enabled": true, "url": "https://attacker.example.net/h"}}),
            serde_json::json!({"async": {"push_enabled": true, "url": "https://attacker.example.net/h", "token": "***"}}),
            serde_json::json!({"async": {"push_enabled": false, "url": "https://hooks.example.com/other"}}),
        ] {
            let err = input(body.clone())
                .admit(&first, AGENT, &c)
                .expect_err("refused");
            assert!(
                matches!(&err, Rejection::SecretRequired { field, .. } if field == "async.token"),
                "{body}: {err:?}"
            );
        }
        let moved = input(serde_json::json!({"async": {"push_enabled": true, "url": "https://hooks.example.com/new", "token": "tok-2"}}))
            .admit(&first, AGENT, &c)
            .expect("the token sent again");
        assert_eq!(
            moved.asynchronous.token.map(|t| c
                .open(
                    &t,
                    &Place::push_token(AGENT, Some("https://hooks.example.com/new"))
                )
                .expect("opens")),
            Some("tok-2".to_owned())
        );
        // Without a url there is nowhere to send it; setting one later needs the token again.
        let parked = input(serde_json::json!({"max_concurrency": 3}))
            .admit(&first, AGENT, &c)
            .expect("ok");
        assert!(parked.asynchronous.url.is_none());
        let err = input(serde_json::json!({"async": {"push_enabled": true, "url": "https://hooks.example.com/h"}}))
            .admit(&parked, AGENT, &c)
            .expect_err("refused");
        assert_eq!(err.field(), Some("async.token"));
    }
}
