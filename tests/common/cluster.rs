//! Cluster harness: a temporary PostgreSQL (`events::store::pg::testing`) and N `hangar serve`
//! nodes on it, each with its own data directory, all sharing the admin token and secret key.

use events::store::pg::testing::TempPostgres;

use super::Server;

/// A fixed 32-byte key (base64) every node of a test cluster shares.
pub const SECRET_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

pub struct Cluster {
    /// Dropped last (fields drop in order): the nodes stop before their database does.
    pub nodes: Vec<Server>,
    pub url: String,
    pub pg: TempPostgres,
}

/// A temporary PostgreSQL, or `None` (said loudly) when its binaries are not installed.
pub fn postgres() -> Option<TempPostgres> {
    let pg = TempPostgres::start();
    if pg.is_none() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: no PostgreSQL binaries (initdb, pg_ctl) found; install \
             Debian's `postgresql` (./x test does) or set HANGAR_PG_BIN !!!!!!!!\n"
        );
    }
    pg
}

impl Cluster {
    /// `n` nodes on a fresh database, or `None` when PostgreSQL is not installed.
    pub fn start(n: usize) -> Option<Cluster> {
        Cluster::start_with(n, &[])
    }

    pub fn start_with(n: usize, env: &[(&str, &str)]) -> Option<Cluster> {
        let pg = postgres()?;
        let url = pg.url();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            url,
            pg,
        };
        for _ in 0..n {
            cluster.add_node(env);
        }
        Some(cluster)
    }

    /// The environment a node of this cluster runs with, plus `extra`.
    pub fn node_env<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env = vec![
            ("HANGAR_STORE", self.url.as_str()),
            ("HANGAR_SECRET_KEY", SECRET_KEY),
        ];
        env.extend_from_slice(extra);
        env
    }

    /// Starts one more node.
    pub fn add_node(&mut self, extra: &[(&str, &str)]) -> &Server {
        let dir = tempfile::tempdir().expect("temp data dir");
        let server = Server::start_with(dir, &self.node_env(extra));
        self.nodes.push(server);
        self.nodes.last().expect("just pushed")
    }
}

impl std::ops::Index<usize> for Cluster {
    type Output = Server;

    fn index(&self, i: usize) -> &Server {
        &self.nodes[i]
    }
}
