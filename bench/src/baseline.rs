//! The baseline: a bare actix-web server in this process (its own thread and System, default
//! worker count, like Hangar's) answering `{"input": {"name": N}}` with `{"greeting": "Hello N"}`.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;

use actix_web::{dev::ServerHandle, web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};

pub struct Baseline {
    pub addr: SocketAddr,
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

async fn greet(body: web::Json<Value>) -> HttpResponse {
    let name = body["input"]["name"].as_str().unwrap_or_default();
    HttpResponse::Ok().json(json!({ "greeting": format!("Hello {name}") }))
}

impl Baseline {
    pub fn start() -> Result<Baseline, String> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let sys = actix_web::rt::System::new();
            sys.block_on(async move {
                let server = match HttpServer::new(|| {
                    App::new().route("/v1/agents/{id}/invoke", web::post().to(greet))
                })
                .bind(("127.0.0.1", 0))
                {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(format!("baseline bind: {e}")));
                        return;
                    }
                };
                let addr = server.addrs()[0];
                let server = server.disable_signals().run();
                let _ = tx.send(Ok((addr, server.handle())));
                let _ = server.await;
            });
        });
        let (addr, handle) = rx
            .recv()
            .map_err(|_| "baseline thread ended early".to_string())??;
        Ok(Baseline {
            addr,
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        // `stop` sends its command at once; the returned future only awaits completion.
        drop(self.handle.stop(false));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
