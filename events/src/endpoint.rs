//! Endpoint settings: how the deployed endpoints behave. Part of the draft, live at the next deploy.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::egress;
use crate::secret::{Cipher, Sealed, REDACTED};
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
/// it was never shown.
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
    /// Checks ranges and seals the token; `current` supplies the token kept when none is sent.
    pub fn admit(
        &self,
        current: &EndpointSettings,
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
            None | Some(REDACTED) => current.asynchronous.token.clone(),
            Some("") => None,
            Some(t) => Some(cipher.seal(t)),
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

    fn input(v: serde_json::Value) -> EndpointInput {
        serde_json::from_value(v).expect("parses")
    }

    #[test]
    fn defaults_and_null_timeout() {
        let c = Cipher::from_key(&[0; 32]);
        let cur = EndpointSettings::default();
        let s = input(serde_json::json!({})).admit(&cur, &c).expect("ok");
        assert_eq!(s, EndpointSettings::default());
        let s = input(serde_json::json!({"async": {"timeout_s": null}}))
            .admit(&cur, &c)
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
            let err = input(body).admit(&cur, &c).expect_err("refused");
            assert_eq!(err.field(), Some(field));
        }
    }

    #[test]
    fn token_is_kept_when_not_resent() {
        let c = Cipher::from_key(&[0; 32]);
        let first = input(serde_json::json!({"async": {"push_enabled": true, "url": "http://127.0.0.1:1/h", "token": "tok"}}))
            .admit(&EndpointSettings::default(), &c)
            .expect("ok");
        let second = input(serde_json::json!({"max_concurrency": 3, "async": {"push_enabled": true, "url": "http://127.0.0.1:1/h", "token": "***"}}))
            .admit(&first, &c)
            .expect("ok");
        assert_eq!(second.asynchronous.token, first.asynchronous.token);
    }
}
