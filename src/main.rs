//! `hangar`: the server and the operators' offline tools.
//!
//! # Layout
//! - `serve`: opens the data directory (store, secret key, admin token) and runs the HTTP server.
//! - `http`: the actix-web layer; thin handlers over the `actors` registry, one error mapping.
//! - `offline`: `events`, `replay` and `verify`, which read a stopped server's data directory.
//!
//! The domain and the log live in the `events` crate, the actors in `actors`.

mod cluster;
mod http;
mod offline;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use uuid::Uuid;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hangar",
    version,
    about = "A self-hosted runtime for deploying AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve(serve::Options),
    /// Print an agent's event log, one stored envelope (JSON) per line, oldest first.
    Events {
        #[arg(long, default_value = "./hangar-data")]
        data: PathBuf,
        /// A postgres:// store to read instead of --data (HANGAR_STORE).
        #[arg(long, env = "HANGAR_STORE")]
        store: Option<String>,
        agent_id: Uuid,
    },
    /// Fold an agent's log and print its state (secrets redacted), optionally as of event SEQ.
    Replay {
        #[arg(long, default_value = "./hangar-data")]
        data: PathBuf,
        /// A postgres:// store to read instead of --data (HANGAR_STORE).
        #[arg(long, env = "HANGAR_STORE")]
        store: Option<String>,
        agent_id: Uuid,
        #[arg(long)]
        at: Option<u64>,
    },
    /// Check every agent's hash chain; exits 1 naming the first bad event.
    Verify {
        #[arg(long, default_value = "./hangar-data")]
        data: PathBuf,
        /// A postgres:// store to read instead of --data (HANGAR_STORE).
        #[arg(long, env = "HANGAR_STORE")]
        store: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Serve(opts) => serve::run(opts),
        Cmd::Events {
            data,
            store,
            agent_id,
        } => offline::events(&data, store.as_deref(), agent_id),
        Cmd::Replay {
            data,
            store,
            agent_id,
            at,
        } => offline::replay(&data, store.as_deref(), agent_id, at),
        Cmd::Verify { data, store } => offline::verify(&data, store.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hangar: {e}");
            ExitCode::from(2)
        }
    }
}
