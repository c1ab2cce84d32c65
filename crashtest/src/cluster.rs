//! The servers under test: one `hangar serve` on a sled data directory, or a cluster of N nodes
//! on a temporary PostgreSQL (`events::store::pg::testing`, the harness the cluster tests use).

use std::path::{Path, PathBuf};

use events::store::pg::testing::TempPostgres;

use crate::server::Server;

/// A fixed 32-byte key (base64) every node shares: the nodes must all read the secrets any of
/// them stored, and the test's data is thrown away.
const SECRET_KEY: &str = "Y3Jhc2h0ZXN0LWNsdXN0ZXItc2VjcmV0LWtleS0wMDE=";

/// A fresh PostgreSQL in a temporary directory; an error when it is not installed or does not
/// start (the harness cannot run, exit status 2).
pub fn postgres() -> Result<TempPostgres, String> {
    match std::panic::catch_unwind(TempPostgres::start) {
        Ok(Some(pg)) => Ok(pg),
        Ok(None) => Err(
            "--cluster needs PostgreSQL (initdb, pg_ctl): install Debian's \
                         `postgresql` or set HANGAR_PG_BIN"
                .to_owned(),
        ),
        Err(_) => Err("the temporary PostgreSQL did not start (see the panic above)".to_owned()),
    }
}

/// `count` nodes on `store` (each with its own data directory and a fixed `--node-id`, so a
/// restarted node takes its earlier process's place), or one sled server when `store` is
/// `None`. Returns the servers and their log files.
pub fn start_nodes(
    bin: &Path,
    work: &Path,
    store: Option<&str>,
    count: usize,
) -> Result<(Vec<Server>, Vec<PathBuf>), String> {
    let Some(url) = store else {
        let log = work.join("server.log");
        let server = Server::start(bin, &work.join("data"), &log)?;
        return Ok((vec![server], vec![log]));
    };
    let (mut nodes, mut logs) = (Vec::new(), Vec::new());
    for i in 0..count {
        let name = format!("node-{}", (b'a' + i as u8) as char);
        let log = work.join(format!("{name}.log"));
        let env = vec![
            ("HANGAR_STORE".to_owned(), url.to_owned()),
            ("HANGAR_SECRET_KEY".to_owned(), SECRET_KEY.to_owned()),
            ("HANGAR_NODE_ID".to_owned(), name.clone()),
        ];
        let mut server = Server::start_with(bin, &work.join(&name), &log, env)?;
        server.name = name;
        nodes.push(server);
        logs.push(log);
    }
    Ok((nodes, logs))
}
