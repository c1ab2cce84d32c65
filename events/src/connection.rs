//! Connections: where tools send requests and with which credentials.
//!
//! `Auth<S>` is generic over how a secret is held: `String` in a request body, [`Sealed`] in an
//! event and in state, and `&'static str` (`"***"`) in a response. One shape, three lives.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::egress;
use crate::secret::{Cipher, Place, Sealed, REDACTED};
use crate::Rejection;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialMode {
    /// One set of credentials for every caller.
    #[default]
    Team,
    /// Each caller (`X-Hangar-Member`) uses its own stored credentials.
    Member,
}

/// Which credentials a call uses. Live runs use the live ones where a connection (or a member)
/// has them, and the draft ones otherwise; previews and draft checks use the draft ones only, so
/// a preview never sends a production secret.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    #[default]
    Draft,
    Live,
}

impl Environment {
    pub fn is_draft(&self) -> bool {
        *self == Environment::Draft
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Environment::Draft => "draft",
            Environment::Live => "live",
        }
    }
}

/// A team connection's credentials per environment beyond the draft's `auth`: for now the live
/// environment's (`"environments": {"live": {"auth": {...}}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Environments<S> {
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub live: Option<EnvironmentCredentials<S>>,
}

/// One environment's credentials: an auth of the connection's type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentCredentials<S> {
    pub auth: Auth<S>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Auth<S> {
    ApiKey {
        /// Required of a connection; a member's own credentials take the connection's.
        #[serde(default)]
        header: String,
        #[serde(default = "none", skip_serializing_if = "Option::is_none")]
        key: Option<S>,
    },
    Basic {
        /// Sealed and redacted like the password: half of the credential, and often a name
        /// worth guessing passwords for. Events written before it was sealed hold it in
        /// plaintext; those still load and open ([`Cipher::open_or_plaintext`]).
        #[serde(default = "none", skip_serializing_if = "Option::is_none")]
        username: Option<S>,
        #[serde(default = "none", skip_serializing_if = "Option::is_none")]
        password: Option<S>,
    },
    Bearer {
        #[serde(default = "none", skip_serializing_if = "Option::is_none")]
        token: Option<S>,
    },
    KeyValue {
        #[serde(default = "BTreeMap::new")]
        pairs: BTreeMap<String, S>,
    },
}

fn none<S>() -> Option<S> {
    None
}

impl<S> Auth<S> {
    pub fn type_name(&self) -> &'static str {
        match self {
            Auth::ApiKey { .. } => "api_key",
            Auth::Basic { .. } => "basic",
            Auth::Bearer { .. } => "bearer",
            Auth::KeyValue { .. } => "key_value",
        }
    }

    /// The same auth with every secret passed through `f`.
    pub fn map<T>(&self, mut f: impl FnMut(&S) -> T) -> Auth<T> {
        match self {
            Auth::ApiKey { header, key } => Auth::ApiKey {
                header: header.clone(),
                key: key.as_ref().map(&mut f),
            },
            Auth::Basic { username, password } => Auth::Basic {
                username: username.as_ref().map(&mut f),
                password: password.as_ref().map(&mut f),
            },
            Auth::Bearer { token } => Auth::Bearer {
                token: token.as_ref().map(&mut f),
            },
            Auth::KeyValue { pairs } => Auth::KeyValue {
                pairs: pairs.iter().map(|(k, v)| (k.clone(), f(v))).collect(),
            },
        }
    }

    /// The same auth with every secret passed through `f` along with its field's name
    /// (`auth.key`, `auth.username`, `auth.password`, `auth.token`, `auth.pairs.<name>`), which
    /// is part of the [`Place`] it is sealed for.
    pub fn map_fields<T>(&self, mut f: impl FnMut(&str, &S) -> T) -> Auth<T> {
        match self {
            Auth::ApiKey { header, key } => Auth::ApiKey {
                header: header.clone(),
                key: key.as_ref().map(|k| f("auth.key", k)),
            },
            Auth::Basic { username, password } => Auth::Basic {
                username: username.as_ref().map(|u| f("auth.username", u)),
                password: password.as_ref().map(|p| f("auth.password", p)),
            },
            Auth::Bearer { token } => Auth::Bearer {
                token: token.as_ref().map(|t| f("auth.token", t)),
            },
            Auth::KeyValue { pairs } => Auth::KeyValue {
                pairs: pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), f(&format!("auth.pairs.{k}"), v)))
                    .collect(),
            },
        }
    }

    /// The first secret field that is missing, for a credential set that must be complete.
    fn missing_field(&self) -> Option<&'static str> {
        match self {
            Auth::ApiKey { header, .. } if header.trim().is_empty() => Some("header"),
            Auth::ApiKey { key: None, .. } => Some("key"),
            Auth::Basic { username: None, .. } => Some("username"),
            Auth::Basic { password: None, .. } => Some("password"),
            Auth::Bearer { token: None } => Some("token"),
            Auth::KeyValue { pairs } if pairs.is_empty() => Some("pairs"),
            _ => None,
        }
    }
}

impl Auth<String> {
    /// Seals each secret for its place: `place` gives the place of a field by its name.
    pub fn seal(&self, cipher: &Cipher, place: impl Fn(&str) -> Place) -> Auth<Sealed> {
        self.map_fields(|field, s| cipher.seal(s, &place(field)))
    }
}

impl Auth<Sealed> {
    pub fn redacted(&self) -> Auth<&'static str> {
        self.map(|_| REDACTED)
    }

    /// Opens each secret at its place (see [`Auth::seal`]); any that does not open fails it all.
    pub fn open(
        &self,
        cipher: &Cipher,
        place: impl Fn(&str) -> Place,
    ) -> Result<Auth<String>, crate::secret::Error> {
        let mut err = None;
        let out = self.map_fields(|field, s| {
            let place = place(field);
            // Usernames are the one field older builds stored in plaintext.
            let opened = if field == "auth.username" {
                cipher.open_or_plaintext(s, &place)
            } else {
                cipher.open(s, &place)
            };
            opened.unwrap_or_else(|e| {
                err = Some(e);
                String::new()
            })
        });
        err.map_or(Ok(out), Err)
    }
}

/// A connection as a request carries it (`S = String`) and as it is stored (`S = Sealed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Connection<S> {
    /// Required to add one; an update may leave it out (it cannot change).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    #[serde(default)]
    pub display_name: String,
    #[schema(pattern = r"^https?://\S+$")]
    pub server: String,
    #[serde(default)]
    pub sso: bool,
    #[serde(default)]
    pub credentials: CredentialMode,
    /// The draft's credentials, and the live environment's too unless `environments.live` is set.
    pub auth: Auth<S>,
    /// A team connection's live credentials (`environments.live.auth`), used by live runs only.
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub environments: Option<Environments<S>>,
    /// The path a connection check requests (`GET <server><check_path>`); `/` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^/")]
    pub check_path: Option<String>,
}

impl<S> Connection<S> {
    /// Where field `field` of this connection's credentials is sealed for agent `agent`: its team
    /// credentials, or with `member` that member's own. The stored `server` is part of it, so
    /// each secret opens only beside the server it was given for.
    pub fn place(&self, agent: Uuid, member: Option<&str>, field: &str) -> Place {
        match member {
            None => Place::team(agent, &self.id, &self.server, field),
            Some(m) => Place::member(agent, &self.id, &self.server, m, field),
        }
    }

    /// As [`Connection::place`], in environment `environment`: live credentials are sealed
    /// apart from the draft ones, so neither can stand in for the other.
    pub fn place_in(
        &self,
        agent: Uuid,
        member: Option<&str>,
        environment: Environment,
        field: &str,
    ) -> Place {
        let place = self.place(agent, member, field);
        match environment {
            Environment::Draft => place,
            Environment::Live => place.live(),
        }
    }

    /// The team's live credentials, if the connection has its own for the live environment.
    pub fn live_auth(&self) -> Option<&Auth<S>> {
        self.environments.as_ref()?.live.as_ref().map(|l| &l.auth)
    }

    /// The path a check requests.
    pub fn check_path(&self) -> &str {
        self.check_path.as_deref().unwrap_or("/")
    }
}

impl Connection<String> {
    /// Checks a connection from a request and seals its secrets for agent `agent`.
    pub fn admit(&self, agent: Uuid, cipher: &Cipher) -> Result<Connection<Sealed>, Rejection> {
        if !is_identifier(&self.id) {
            return Err(Rejection::invalid(
                "id",
                "connection id must be 1-64 letters, digits, '-' or '_'",
            ));
        }
        check_server(&self.server)?;
        if let Some(path) = &self.check_path {
            check_check_path(path)?;
        }
        let live = self.live_auth();
        if let Some(live) = live {
            if self.credentials == CredentialMode::Member {
                return Err(Rejection::invalid(
                    "environments.live",
                    "a member connection has no team live credentials: each member sets theirs \
                     with PUT .../members/{member}?environment=live",
                ));
            }
            if live.type_name() != self.auth.type_name() {
                return Err(Rejection::invalid(
                    "environments.live.auth.type",
                    format!(
                        "live credentials must be of the connection's auth type, {}",
                        self.auth.type_name()
                    ),
                ));
            }
        }
        match self.credentials {
            CredentialMode::Member if matches!(self.auth, Auth::KeyValue { .. }) => {
                return Err(Rejection::invalid(
                    "auth.type",
                    "key_value auth is team-only: use credentials \"team\"",
                ))
            }
            CredentialMode::Team => {
                if let Some(field) = self.auth.missing_field() {
                    return Err(Rejection::invalid(
                        format!("auth.{field}"),
                        format!("team credentials need auth.{field}"),
                    ));
                }
                if let Some(field) = live
                    .map(|l| l.inherit_header(&self.auth))
                    .as_ref()
                    .and_then(Auth::missing_field)
                {
                    return Err(Rejection::invalid(
                        format!("environments.live.auth.{field}"),
                        format!("live credentials need environments.live.auth.{field}"),
                    ));
                }
            }
            CredentialMode::Member => {
                if let Auth::ApiKey { header, .. } = &self.auth {
                    if header.trim().is_empty() {
                        return Err(Rejection::invalid(
                            "auth.header",
                            "api_key auth needs a header name",
                        ));
                    }
                }
            }
        }
        let mut admitted = Connection {
            id: self.id.clone(),
            display_name: if self.display_name.is_empty() {
                self.id.clone()
            } else {
                self.display_name.clone()
            },
            server: self.server.trim_end_matches('/').to_owned(),
            sso: self.sso,
            credentials: self.credentials,
            auth: self.auth.map(|_| None::<()>).keep_shape_only(),
            environments: None,
            check_path: self.check_path.clone(),
        };
        // With member credentials the team-level secrets are never used, so none is kept. Team
        // secrets are sealed for the connection as stored, server included; live ones for the
        // live environment.
        if self.credentials == CredentialMode::Team {
            admitted.auth = self
                .auth
                .seal(cipher, |field| admitted.place(agent, None, field));
            if let Some(live) = live {
                let auth = live.inherit_header(&self.auth).seal(cipher, |field| {
                    admitted.place_in(agent, None, Environment::Live, field)
                });
                admitted.environments = Some(Environments {
                    live: Some(EnvironmentCredentials { auth }),
                });
            }
        }
        Ok(admitted)
    }
}

impl Auth<Option<()>> {
    /// The auth type and its non-secret fields, with no secret at all.
    fn keep_shape_only(self) -> Auth<Sealed> {
        match self {
            Auth::ApiKey { header, .. } => Auth::ApiKey { header, key: None },
            Auth::Basic { .. } => Auth::Basic {
                username: None,
                password: None,
            },
            Auth::Bearer { .. } => Auth::Bearer { token: None },
            Auth::KeyValue { .. } => Auth::KeyValue {
                pairs: BTreeMap::new(),
            },
        }
    }
}

impl Connection<Sealed> {
    pub fn redacted(&self) -> Connection<&'static str> {
        Connection {
            id: self.id.clone(),
            display_name: self.display_name.clone(),
            server: self.server.clone(),
            sso: self.sso,
            credentials: self.credentials,
            auth: self.auth.redacted(),
            environments: self.live_auth().map(|auth| Environments {
                live: Some(EnvironmentCredentials {
                    auth: auth.redacted(),
                }),
            }),
            check_path: self.check_path.clone(),
        }
    }
}

impl Auth<String> {
    /// An `api_key` auth without a header name takes `of`'s: live credentials and members'
    /// supply the secret, the connection names the header.
    fn inherit_header(&self, of: &Auth<String>) -> Auth<String> {
        match (self, of) {
            (Auth::ApiKey { header, key }, Auth::ApiKey { header: theirs, .. })
                if header.trim().is_empty() =>
            {
                Auth::ApiKey {
                    header: theirs.clone(),
                    key: key.clone(),
                }
            }
            _ => self.clone(),
        }
    }
}

impl<S: Clone> Auth<S> {
    /// Each secret by its field's name (`auth.token`, `auth.pairs.<name>`…).
    fn fields(&self) -> BTreeMap<String, S> {
        let mut out = BTreeMap::new();
        self.map_fields(|field, s| out.insert(field.to_owned(), s.clone()));
        out
    }
}

impl Connection<Sealed> {
    /// An update's team secrets sent as `***` (read back from a response, e.g. by a form that
    /// edits other fields) keep the stored ones, as the push token does, rather than being
    /// stored as `***`. Only for the same server (a move needs every secret, see
    /// `command::check_server_move`), so a kept value still opens where it is: same agent,
    /// connection, server, field and environment. A `***` with nothing stored for it is refused.
    pub fn keep_unsent(
        &mut self,
        sent: &Connection<String>,
        stored: &Connection<Sealed>,
    ) -> Result<(), Rejection> {
        if self.credentials != CredentialMode::Team || self.server != stored.server {
            return Ok(());
        }
        self.auth = keep(&self.auth, &sent.auth, Some(&stored.auth), "")?;
        if let (Some(live), Some(sent_live)) = (
            self.environments.as_mut().and_then(|e| e.live.as_mut()),
            sent.live_auth(),
        ) {
            live.auth = keep(
                &live.auth,
                sent_live,
                stored.live_auth(),
                "environments.live.",
            )?;
        }
        Ok(())
    }
}

/// `admitted` with each field `sent` as `***` replaced by `stored`'s sealed value of that field.
fn keep(
    admitted: &Auth<Sealed>,
    sent: &Auth<String>,
    stored: Option<&Auth<Sealed>>,
    prefix: &str,
) -> Result<Auth<Sealed>, Rejection> {
    let sent = sent.fields();
    let stored = stored
        .filter(|s| s.type_name() == admitted.type_name())
        .map(Auth::fields)
        .unwrap_or_default();
    let mut missing = None;
    let kept = admitted.map_fields(|field, sealed| {
        if sent.get(field).map(String::as_str) != Some(REDACTED) {
            return sealed.clone();
        }
        stored.get(field).cloned().unwrap_or_else(|| {
            missing.get_or_insert_with(|| format!("{prefix}{field}"));
            sealed.clone()
        })
    });
    match missing {
        Some(field) => Err(Rejection::secret_required(
            field.clone(),
            format!("{field} is \"***\" but no such secret is stored to keep: send the secret"),
        )),
        None => Ok(kept),
    }
}

/// Checks member `member`'s own credentials against the connection of agent `agent` they are for,
/// and seals them for that member there, in `environment`.
pub fn admit_member_auth(
    agent: Uuid,
    connection: &Connection<Sealed>,
    member: &str,
    environment: Environment,
    auth: &Auth<String>,
    cipher: &Cipher,
) -> Result<Auth<Sealed>, Rejection> {
    if connection.credentials != CredentialMode::Member {
        return Err(Rejection::invalid(
            "credentials",
            format!(
                "connection '{}' uses team credentials; member credentials apply only to \"member\" connections",
                connection.id
            ),
        ));
    }
    if auth.type_name() != connection.auth.type_name() {
        return Err(Rejection::invalid(
            "type",
            format!(
                "connection '{}' uses {} auth, not {}",
                connection.id,
                connection.auth.type_name(),
                auth.type_name()
            ),
        ));
    }
    // The header name is the connection's; a member supplies only the secret.
    let auth = match (auth, &connection.auth) {
        (Auth::ApiKey { key, .. }, Auth::ApiKey { header, .. }) => Auth::ApiKey {
            header: header.clone(),
            key: key.clone(),
        },
        (other, _) => other.clone(),
    };
    if let Some(field) = auth.missing_field() {
        return Err(Rejection::invalid(
            field,
            format!("member credentials need {field}"),
        ));
    }
    Ok(auth.seal(cipher, |field| {
        connection.place_in(agent, Some(member), environment, field)
    }))
}

/// A member's name, wherever one is given (member credentials, member invocation keys): 1-128
/// characters, none of them control characters, so it prints in logs and fits a header.
pub fn check_member_name(member: &str) -> Result<(), Rejection> {
    if member.is_empty() || member.len() > 128 || member.chars().any(char::is_control) {
        return Err(Rejection::invalid(
            "member",
            "a member name is 1-128 printable characters",
        ));
    }
    Ok(())
}

impl Connection<String> {
    /// The first team secret, draft or live, that was not really sent (see
    /// [`Auth::unsent_secret`]), named by its path in the body.
    pub fn unsent_secret(&self) -> Option<String> {
        self.auth.unsent_secret().or_else(|| {
            self.live_auth()?
                .unsent_secret()
                .map(|field| format!("environments.live.{field}"))
        })
    }
}

impl Auth<String> {
    /// The first secret of a team credential set that was not really sent: absent, or the `***`
    /// a client read back from a response. Named as `auth.<field>` (`auth.pairs.<name>`).
    pub fn unsent_secret(&self) -> Option<String> {
        let unsent = |s: &Option<String>| s.as_deref().is_none_or(|s| s == REDACTED);
        match self {
            Auth::ApiKey { key, .. } if unsent(key) => Some("auth.key".into()),
            Auth::Basic { password, .. } if unsent(password) => Some("auth.password".into()),
            Auth::Bearer { token } if unsent(token) => Some("auth.token".into()),
            Auth::KeyValue { pairs } if pairs.is_empty() => Some("auth.pairs".into()),
            Auth::KeyValue { pairs } => pairs
                .iter()
                .find(|(_, v)| v.as_str() == REDACTED)
                .map(|(k, _)| format!("auth.pairs.{k}")),
            _ => None,
        }
    }
}

pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A check path is a path on the connection's server: it starts with `/`, and cannot leave the
/// server or smuggle anything into the request line.
fn check_check_path(path: &str) -> Result<(), Rejection> {
    let bad = !path.starts_with('/')
        || path.starts_with("//")
        || path.len() > 2048
        || path.contains('#')
        || path.chars().any(|c| c.is_whitespace() || c.is_control())
        || path
            .split(['/', '?'])
            .any(|segment| segment == ".." || segment == ".");
    if bad {
        return Err(Rejection::invalid(
            "check_path",
            "check_path must be a path on the server: starting with '/', without '..', '#', \
             whitespace, at most 2048 characters (e.g. \"/v1/me\")",
        ));
    }
    Ok(())
}

fn check_server(server: &str) -> Result<(), Rejection> {
    if !egress::is_http_url(server) {
        return Err(Rejection::invalid(
            "server",
            "server must be an absolute http:// or https:// URL",
        ));
    }
    if has_user_info(server) {
        return Err(Rejection::invalid(
            "server",
            "server may not carry user info (user:pass@): put credentials in auth, where they \
             are sealed and sent only as the connection's auth",
        ));
    }
    match egress::literal_refusal(server) {
        Some(why) => Err(Rejection::invalid("server", why)),
        None => Ok(()),
    }
}

/// Whether a URL has user info: an `@` anywhere in its authority as written, or a user name or
/// password as a URL parser reads it. Both, because HTTP clients and URL parsers disagree on
/// where an authority ends (`\`, for one), and such a URL would send a secret in plaintext, in
/// every log line that prints the server, or to a host other than the one it seems to name.
pub fn has_user_info(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    authority.contains('@')
        || url::Url::parse(url).is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: Uuid = Uuid::from_u128(7);

    fn conn(credentials: CredentialMode, auth: serde_json::Value) -> Connection<String> {
        Connection {
            id: "w".into(),
            display_name: String::new(),
            server: "https://api.example.com/".into(),
            sso: false,
            credentials,
            auth: serde_json::from_value(auth).expect("auth parses"),
            environments: None,
            check_path: None,
        }
    }

    #[test]
    fn team_connection_needs_its_secret() {
        let c = Cipher::from_key(&[0; 32]);
        let err = conn(CredentialMode::Team, serde_json::json!({"type": "bearer"}))
            .admit(AGENT, &c)
            .expect_err("no token");
        assert_eq!(err.field(), Some("auth.token"));
        let ok = conn(
            CredentialMode::Team,
            serde_json::json!({"type": "bearer", "token": "t0k"}),
        )
        .admit(AGENT, &c)
        .expect("admitted");
        assert_eq!(ok.server, "https://api.example.com");
        assert_eq!(ok.display_name, "w");
        // Sealed for the connection as stored: beside another server it does not open.
        let opened = ok.auth.open(&c, |f| ok.place(AGENT, None, f));
        assert_eq!(
            opened.expect("opens at its place"),
            Auth::Bearer {
                token: Some("t0k".into())
            }
        );
        let mut moved = ok.clone();
        moved.server = "https://attacker.example".into();
        assert!(ok.auth.open(&c, |f| moved.place(AGENT, None, f)).is_err());
        let shown = serde_json::to_value(ok.redacted()).expect("serializes");
        assert_eq!(shown["auth"]["token"], "***");
    }

    #[test]
    fn servers_at_metadata_or_link_local_addresses_are_refused() {
        let c = Cipher::from_key(&[0; 32]);
        let auth = serde_json::json!({"type": "bearer", "token": "t"});
        for server in [
            "http://169.254.169.254",
            "http://[::ffff:169.254.169.254]/latest",
            "http://metadata.google.internal",
            "http://[fe80::1]:8080",
        ] {
            let mut bad = conn(CredentialMode::Team, auth.clone());
            bad.server = server.into();
            let err = bad.admit(AGENT, &c).expect_err(server);
            assert_eq!(err.field(), Some("server"), "{server}");
            assert!(err.to_string().contains("never sends requests"), "{err}");
        }
        for server in ["not a url", "ftp://x", "http://", "http://a b"] {
            let mut bad = conn(CredentialMode::Team, auth.clone());
            bad.server = server.into();
            let err = bad.admit(AGENT, &c).expect_err(server);
            assert!(err.to_string().contains("absolute http"), "{err}");
        }
        for server in [
            "https://user:pass@api.example.com",
            "https://token@api.example.com/v1",
            "https://@api.example.com",
            "https://api.example.com\\@evil.example",
        ] {
            let mut bad = conn(CredentialMode::Team, auth.clone());
            bad.server = server.into();
            let err = bad.admit(AGENT, &c).expect_err(server);
            assert_eq!(err.field(), Some("server"), "{server}");
            assert!(err.to_string().contains("user info"), "{server}: {err}");
        }
        assert!(!has_user_info("https://api.example.com/a@b?c=d@e"));
        // Loopback and private servers are the operator's call, made at connect time.
        for server in [
            "http://127.0.0.1:9000",
            "http://10.0.0.7",
            "http://localhost",
        ] {
            let mut ok = conn(CredentialMode::Team, auth.clone());
            ok.server = server.into();
            ok.admit(AGENT, &c).expect(server);
        }
    }

    #[test]
    fn key_value_is_team_only() {
        let c = Cipher::from_key(&[0; 32]);
        let err = conn(
            CredentialMode::Member,
            serde_json::json!({"type": "key_value", "pairs": {"a": "b"}}),
        )
        .admit(AGENT, &c)
        .expect_err("refused");
        assert_eq!(err.field(), Some("auth.type"));
    }

    #[test]
    fn member_connection_keeps_no_team_secret_and_checks_member_type() {
        let c = Cipher::from_key(&[0; 32]);
        let stored = conn(
            CredentialMode::Member,
            serde_json::json!({"type": "api_key", "header": "X-Key", "key": "ignored"}),
        )
        .admit(AGENT, &c)
        .expect("admitted");
        assert_eq!(
            stored.auth,
            Auth::ApiKey {
                header: "X-Key".into(),
                key: None
            }
        );
        let bad: Auth<String> =
            serde_json::from_value(serde_json::json!({"type": "bearer", "token": "x"}))
                .expect("parses");
        assert!(admit_member_auth(AGENT, &stored, "alice", Environment::Draft, &bad, &c).is_err());
        let good: Auth<String> = serde_json::from_value(
            serde_json::json!({"type": "api_key", "header": "", "key": "mine"}),
        )
        .expect("parses");
        let sealed = admit_member_auth(AGENT, &stored, "alice", Environment::Draft, &good, &c)
            .expect("admitted");
        let opened = sealed
            .open(&c, |f| stored.place(AGENT, Some("alice"), f))
            .expect("opens");
        assert!(
            sealed
                .open(&c, |f| stored.place(AGENT, Some("bob"), f))
                .is_err(),
            "sealed for alice alone"
        );
        assert_eq!(
            opened,
            Auth::ApiKey {
                header: "X-Key".into(),
                key: Some("mine".into())
            }
        );
    }

    #[test]
    fn live_credentials_are_sealed_apart_and_checked_like_the_draft_ones() {
        let c = Cipher::from_key(&[0; 32]);
        let mut team = conn(
            CredentialMode::Team,
            serde_json::json!({"type": "api_key", "header": "X-Key", "key": "draft-k"}),
        );
        team.environments = Some(
            serde_json::from_value(serde_json::json!({"live": {"auth":
                {"type": "api_key", "key": "live-k"}}}))
            .expect("environments parse"),
        );
        let stored = team.admit(AGENT, &c).expect("admitted");
        let live = stored.live_auth().expect("live credentials kept");
        let opened = live
            .open(&c, |f| stored.place_in(AGENT, None, Environment::Live, f))
            .expect("opens at the live place");
        // The header is the connection's.
        assert_eq!(
            opened,
            Auth::ApiKey {
                header: "X-Key".into(),
                key: Some("live-k".into())
            }
        );
        assert!(live.open(&c, |f| stored.place(AGENT, None, f)).is_err());
        assert!(stored
            .auth
            .open(&c, |f| stored.place_in(AGENT, None, Environment::Live, f))
            .is_err());
        let shown = serde_json::to_value(stored.redacted()).expect("serializes");
        assert_eq!(shown["environments"]["live"]["auth"]["key"], "***");

        let refused = |live: serde_json::Value, credentials: CredentialMode| {
            let mut bad = conn(
                credentials,
                serde_json::json!({"type": "bearer", "token": "t"}),
            );
            bad.environments = Some(serde_json::from_value(live).expect("environments parse"));
            bad.admit(AGENT, &c).expect_err("refused")
        };
        let err = refused(
            serde_json::json!({"live": {"auth": {"type": "basic", "username": "u", "password": "p"}}}),
            CredentialMode::Team,
        );
        assert_eq!(err.field(), Some("environments.live.auth.type"));
        let err = refused(
            serde_json::json!({"live": {"auth": {"type": "bearer"}}}),
            CredentialMode::Team,
        );
        assert_eq!(err.field(), Some("environments.live.auth.token"));
        let err = refused(
            serde_json::json!({"live": {"auth": {"type": "bearer", "token": "t"}}}),
            CredentialMode::Member,
        );
        assert_eq!(err.field(), Some("environments.live"));
    }

    #[test]
    fn a_check_path_stays_on_the_server() {
        let c = Cipher::from_key(&[0; 32]);
        let with_path = |path: &str| {
            let mut x = conn(
                CredentialMode::Team,
                serde_json::json!({"type": "bearer", "token": "t"}),
            );
            x.check_path = Some(path.into());
            x.admit(AGENT, &c)
        };
        for ok in ["/", "/v1/me", "/health?deep=1", "/a/b.c"] {
            let stored = with_path(ok).expect(ok);
            assert_eq!(stored.check_path(), ok);
        }
        for bad in [
            "",
            "me",
            "//evil.example/x",
            "/../admin",
            "/a/./b",
            "/x#y",
            "/a b",
            "/\n",
        ] {
            let err = with_path(bad).expect_err(bad);
            assert_eq!(err.field(), Some("check_path"), "{bad:?}");
        }
    }
}
