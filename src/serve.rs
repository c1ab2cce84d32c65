//! `hangar serve`: the data directory, the admin token, and the HTTP server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use actors::egress;
use actors::push::Schedule;
use actors::runtime::{Runtime, RuntimeConfig};
use actors::Registry;
use events::secret::{write_private, Cipher};
use events::store::{EventStore, PgStore, RunStores, SledRuns, SledStore};
use rand::RngCore;

use crate::cluster::{default_node_id, Node, NodeStore, StoreUrl};
use crate::http::{self, AdminToken, BodyTimeout, PublicUrl};

#[derive(clap::Args)]
pub struct Options {
    /// Data directory: the embedded store, the secret key, the admin token.
    #[arg(long, default_value = "./hangar-data", env = "HANGAR_DATA")]
    data: PathBuf,
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8080", env = "HANGAR_ADDR")]
    addr: String,
    /// Base URL clients use to reach this server, for the endpoint URLs of deployments.
    /// Default: taken from each request's Host header.
    #[arg(long, env = "HANGAR_PUBLIC_URL")]
    public_url: Option<String>,
    /// MiB the process may spend on caches: the store's page cache and the compiled flow
    /// templates. Without a bound, sled's page cache grows to 1 GiB under sustained load.
    #[arg(long, default_value_t = 128, env = "HANGAR_CACHE_MB",
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    cache_mb: u64,
    /// Where everything durable is kept: `sled` (the default: the embedded store in --data) or
    /// a `postgres://` URL, which any number of nodes may share (cluster mode, docs/cluster.md).
    #[arg(long, env = "HANGAR_STORE")]
    store: Option<String>,
    /// This node's name in logs and `GET /v1/cluster`. Default: host:port.
    #[arg(long, env = "HANGAR_NODE_ID")]
    node_id: Option<String>,
}

/// How `--cache-mb` is shared out: half to sled's page cache, a sixteenth to the compiled
/// templates of the threads that run flows, and the rest left for what sled holds beyond its
/// cache. sled counts a cached page by its size on disk, and it weighs about 1.3× that in memory;
/// it also keeps a few hundred bytes for every page of the store, cached or not (measured with
/// heaptrack and the bench's soak, `docs/performance.md`). Templates get little: a server's flows
/// use far less, and a template cache that starts over costs only recompiling.
struct CacheBudget {
    store_bytes: u64,
    templates_per_thread: usize,
}

impl CacheBudget {
    fn new(cache_mb: u64, threads: usize) -> CacheBudget {
        let total = cache_mb.saturating_mul(1 << 20);
        CacheBudget {
            store_bytes: total / 2,
            templates_per_thread: usize::try_from(total / 16 / threads.max(1) as u64)
                .unwrap_or(usize::MAX),
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

pub fn store_path(data: &Path) -> PathBuf {
    data.join("store")
}

pub fn run(opts: Options) -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Every setting is checked before anything is created or opened.
    let config = runtime_config()?;
    let store_url = StoreUrl::parse(opts.store.as_deref())?;
    if let StoreUrl::Postgres(_) = store_url {
        // Every node must seal and check with the same secrets: none may make up its own.
        for var in ["HANGAR_ADMIN_TOKEN", "HANGAR_SECRET_KEY"] {
            if std::env::var(var).map_or(true, |v| v.trim().is_empty()) {
                return Err(format!(
                    "{var} must be set with a postgres store: every node of a cluster shares it"
                )
                .into());
            }
        }
    } else {
        create_private_dir(&opts.data)?;
    }
    egress_policy()?;
    let token = admin_token(&opts.data)?;
    let secret_key = std::env::var("HANGAR_SECRET_KEY").ok();
    let cipher = Arc::new(Cipher::load(secret_key.as_deref(), &opts.data)?);
    let budget = CacheBudget::new(opts.cache_mb, flow_threads());
    // Three caches per thread: templates, tool path templates, expressions.
    actors::flow::template::set_cache_bytes(budget.templates_per_thread / 3);
    // Bound before the store opens: the node's default id is the port it got.
    let listener = std::net::TcpListener::bind(&opts.addr)?;
    let local = listener.local_addr()?;
    let node_id = opts
        .node_id
        .clone()
        .unwrap_or_else(|| default_node_id(&local));
    match store_url {
        StoreUrl::Sled => {
            let store = Arc::new(SledStore::open_with(
                &store_path(&opts.data),
                budget.store_bytes,
            )?);
            let node = Node {
                id: node_id,
                addr: local.to_string(),
                started_at: chrono::Utc::now(),
                store: NodeStore::Sled,
                beating_since: Default::default(),
            };
            let events: Arc<dyn EventStore> = store.clone();
            let runs: Arc<dyn RunStores> = Arc::new(SledRuns::open(store.clone())?);
            let stores = (events, runs);
            actix_web::rt::System::new()
                .block_on(serve(opts, config, token, cipher, stores, node, listener))?;
            // The actors' threads outlive the system with their handles on the store, so its
            // drop (which would do the same) never comes. Without this, the next start replays
            // the write-ahead log: correct, only slower.
            if let Err(e) = store.checkpoint_blocking() {
                tracing::error!(error = %e, "the shutdown checkpoint failed; the next start replays the log");
            }
        }
        StoreUrl::Postgres(url) => {
            let pg = PgStore::connect(&url, &node_id)?;
            tracing::info!(node = %node_id, "connected to the postgres store");
            let node = Node {
                id: node_id,
                addr: local.to_string(),
                started_at: chrono::Utc::now(),
                store: NodeStore::Postgres(pg.clone()),
                beating_since: Default::default(),
            };
            let stores: (Arc<dyn EventStore>, Arc<dyn RunStores>) =
                (Arc::new(pg.clone()), Arc::new(pg));
            actix_web::rt::System::new()
                .block_on(serve(opts, config, token, cipher, stores, node, listener))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    opts: Options,
    config: RuntimeConfig,
    token: String,
    cipher: Arc<Cipher>,
    (events, runs): (Arc<dyn EventStore>, Arc<dyn RunStores>),
    node: Node,
    listener: std::net::TcpListener,
) -> Result<()> {
    let threads = flow_threads();
    let node = Arc::new(node);
    // Before recovery: a node that beats is alive, so no other takes its runs for a dead one's.
    node.start_heartbeat();
    let registry = match node.store {
        NodeStore::Sled => Registry::new(events, cipher, threads),
        NodeStore::Postgres(_) => Registry::new_shared(events, cipher, threads),
    };
    let runtime = Runtime::new(registry.clone(), runs, threads, config)?;
    let recovered = runtime.recover().await?;
    if recovered.interrupted > 0 || recovered.agents_with_queue > 0 {
        tracing::info!(
            interrupted = recovered.interrupted,
            agents_with_queue = recovered.agents_with_queue,
            "recovered runs"
        );
    }
    runtime.start_retention();
    node.start_cluster_tasks(runtime.clone(), registry.clone());
    runtime.start_pusher(push_schedule()?);
    let registry = web::Data::new(registry);
    let draining = runtime.clone();
    let runtime = web::Data::new(runtime);
    let token = web::Data::new(AdminToken(token));
    let public = web::Data::new(PublicUrl(opts.public_url.clone()));
    let body_timeout = body_timeout()?;
    let node_data = web::Data::from(node.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(node_data.clone())
            .app_data(registry.clone())
            .app_data(runtime.clone())
            .app_data(token.clone())
            .app_data(public.clone())
            .app_data(body_timeout)
            .configure(http::configure)
            .default_service(web::to(http::not_found))
    })
    // Sync runs may take up to their 300 s timeout; SIGTERM lets them finish.
    .shutdown_timeout(300)
    .disable_signals()
    .listen(listener)?;
    for addr in server.addrs() {
        // Tests and scripts read this line to learn the port chosen for `--addr 127.0.0.1:0`.
        println!("hangar listening on http://{addr}");
    }
    std::io::stdout().flush()?;
    tracing::info!(node = %node.id, store = node.kind(), data = %opts.data.display(), "serving");
    let server = server.run();
    let handle = server.handle();
    let signals = draining.clone();
    actix_web::rt::spawn(async move {
        shutdown_signal().await;
        tracing::info!("draining: no new connections; sync runs finish, queued runs stay queued");
        signals.start_draining();
        handle.stop(true).await;
    });
    server.await?;
    let still_running = draining.quiesce(Duration::from_secs(30)).await?;
    if let NodeStore::Postgres(pg) = &node.store {
        if let Err(e) = pg.leave().await {
            tracing::warn!(error = %e, "could not leave the node table; the others will time it out");
        }
    }
    tracing::info!(still_running, "stopped");
    Ok(())
}

/// The runtime's arbiters, one per core: they run the agents' flows (and so hold the templates).
fn flow_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use actix_web::rt::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            let interrupt = Box::pin(actix_web::rt::signal::ctrl_c());
            futures_util::future::select(Box::pin(term.recv()), interrupt).await;
            return;
        }
    }
    let _ = actix_web::rt::signal::ctrl_c().await;
}

/// `HANGAR_PUSH_SCHEDULE` (seconds between attempts, e.g. `5,300,1800`), else Standard Webhooks'.
fn push_schedule() -> Result<Schedule> {
    match std::env::var("HANGAR_PUSH_SCHEDULE") {
        Ok(text) => Ok(text.parse::<Schedule>()?),
        Err(_) => Ok(Schedule::standard()),
    }
}

/// Runtime settings from the environment (documented in docs/operations.md).
fn runtime_config() -> Result<RuntimeConfig> {
    let mut config = RuntimeConfig::default();
    if let Ok(v) = std::env::var("HANGAR_MAX_QUEUE") {
        config.max_queue = v.parse().map_err(|_| "HANGAR_MAX_QUEUE must be a number")?;
    }
    if let Some(keep) = retention(|name| std::env::var(name).ok())? {
        config.retention = keep;
    }
    if let Ok(v) = std::env::var("HANGAR_AGENT_QUOTA_MB") {
        let mb: usize = v
            .parse()
            .map_err(|_| "HANGAR_AGENT_QUOTA_MB must be a whole number of MiB")?;
        config.agent_quota_bytes = mb.saturating_mul(1024 * 1024);
    }
    Ok(config)
}

/// `HANGAR_BODY_TIMEOUT_S`: how long a request body may take to arrive (default 30 s).
fn body_timeout() -> Result<BodyTimeout> {
    match std::env::var("HANGAR_BODY_TIMEOUT_S") {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(s) if s >= 1 => Ok(BodyTimeout(Duration::from_secs(s))),
            _ => Err("HANGAR_BODY_TIMEOUT_S must be a whole number of seconds, at least 1".into()),
        },
        Err(_) => Ok(BodyTimeout::default()),
    }
}

/// `HANGAR_RUN_RETENTION` (`90s`, `10m`, `168h`, `7d`), which wins over the older
/// `HANGAR_RUN_RETENTION_HOURS`; `None` if neither is set.
fn retention(var: impl Fn(&str) -> Option<String>) -> Result<Option<chrono::Duration>> {
    if let Some(text) = var("HANGAR_RUN_RETENTION") {
        if var("HANGAR_RUN_RETENTION_HOURS").is_some() {
            tracing::warn!("HANGAR_RUN_RETENTION_HOURS is ignored: HANGAR_RUN_RETENTION is set");
        }
        let keep = parse_retention(&text).ok_or_else(|| {
            format!(
                "HANGAR_RUN_RETENTION must be a whole number with a unit s, m, h or d, \
                 from 1s to 36500d, e.g. 90s, 10m, 168h, 7d (got {text:?})"
            )
        })?;
        return Ok(Some(keep));
    }
    let Some(text) = var("HANGAR_RUN_RETENTION_HOURS") else {
        return Ok(None);
    };
    let keep = parse_retention(&format!("{}h", text.trim())).ok_or_else(|| {
        format!("HANGAR_RUN_RETENTION_HOURS must be a whole number of hours, from 1 to 876000 (got {text:?})")
    })?;
    Ok(Some(keep))
}

/// `N` followed by `s`, `m`, `h` or `d`, at least a second and at most 100 years (so that no
/// cutoff computed from it can overflow).
fn parse_retention(text: &str) -> Option<chrono::Duration> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let seconds_per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let n: i64 = text[..text.len() - 1].parse().ok()?;
    let seconds = n.checked_mul(seconds_per)?;
    (1..=36_500 * 86_400)
        .contains(&seconds)
        .then(|| chrono::Duration::seconds(seconds))
}

/// The egress policy from `HANGAR_EGRESS_*` (docs/security.md), in force before any outbound
/// client exists. A bad value stops the server rather than weakening the policy.
fn egress_policy() -> Result<()> {
    let policy = egress::Policy::from_vars(|name| std::env::var(name).ok())?;
    tracing::info!(
        allow_loopback = policy.allow_loopback,
        allow_private = policy.allow_private,
        deny = %policy.deny.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        "egress policy"
    );
    egress::install(policy).map_err(|_| "the egress policy was already set")?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The fewest characters an admin token may have. The token opens every management route, and a
/// short one can be guessed online; an empty one (an empty `admin-token` file) would even match an
/// empty `Authorization: Bearer`.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// `HANGAR_ADMIN_TOKEN`, else the token kept in `DIR/admin-token`, else a new one, printed once.
/// A token shorter than [`MIN_ADMIN_TOKEN_CHARS`], from either source, stops the start.
fn admin_token(dir: &Path) -> Result<String> {
    if let Ok(t) = std::env::var("HANGAR_ADMIN_TOKEN") {
        return long_enough(t.trim(), "HANGAR_ADMIN_TOKEN");
    }
    let path = dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(t) => long_enough(t.trim(), &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut raw);
            let token = format!(
                "hgr_{}",
                raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
            write_private(&path, token.as_bytes())?;
            println!(
                "admin token (shown once; kept in {}): {token}",
                path.display()
            );
            Ok(token)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display()).into()),
    }
}

fn long_enough(token: &str, source: &str) -> Result<String> {
    let chars = token.chars().count();
    if chars < MIN_ADMIN_TOKEN_CHARS {
        return Err(format!(
            "the admin token from {source} has {chars} characters; it needs at least \
             {MIN_ADMIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`), or remove the file and unset \
             HANGAR_ADMIN_TOKEN to have one generated"
        )
        .into());
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_takes_a_unit_and_stays_in_range() {
        let secs = |t: &str| parse_retention(t).map(|d| d.num_seconds());
        assert_eq!(secs("90s"), Some(90));
        assert_eq!(secs("10m"), Some(600));
        assert_eq!(secs(" 168h "), Some(168 * 3600));
        assert_eq!(secs("7d"), Some(7 * 86_400));
        assert_eq!(secs("36500d"), Some(36_500 * 86_400));
        for bad in [
            "",
            "s",
            "90",
            "0s",
            "-5m",
            "1.5h",
            "1w",
            "36501d",
            "99999999999999999d",
            "10 m",
        ] {
            assert_eq!(secs(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_new_variable_wins_and_the_old_one_still_works() {
        let got = |pairs: &[(&str, &str)]| {
            let var = |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            };
            retention(var).map(|d| d.map(|d| d.num_seconds()))
        };
        assert_eq!(got(&[]).ok(), Some(None));
        let old = [("HANGAR_RUN_RETENTION_HOURS", "2")];
        assert_eq!(got(&old).ok(), Some(Some(7200)));
        let both = [
            ("HANGAR_RUN_RETENTION", "60s"),
            ("HANGAR_RUN_RETENTION_HOURS", "2"),
        ];
        assert_eq!(got(&both).ok(), Some(Some(60)));
        let bad = got(&[("HANGAR_RUN_RETENTION", "60")])
            .unwrap_err()
            .to_string();
        assert!(
            bad.starts_with("HANGAR_RUN_RETENTION must") && !bad.contains('\n'),
            "{bad}"
        );
        let bad = got(&[("HANGAR_RUN_RETENTION_HOURS", "-1")])
            .unwrap_err()
            .to_string();
        assert!(bad.starts_with("HANGAR_RUN_RETENTION_HOURS must"), "{bad}");
    }

    #[test]
    fn the_cache_budget_adds_up() {
        let b = CacheBudget::new(128, 2);
        assert_eq!(b.store_bytes, 64 << 20);
        assert_eq!(b.templates_per_thread, 4 << 20);
        let b = CacheBudget::new(1_048_576, 0);
        assert!(b.store_bytes + b.templates_per_thread as u64 <= 1 << 40);
    }
}
