//! The server's own state: `GET /healthz` (is this node up, and can it reach its store) and
//! `GET /v1/cluster` (the nodes that serve this Hangar).

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::Admin;
use super::responses::{Forbidden, Unauthorized, Unavailable};
use crate::cluster::Node;

#[derive(Serialize, ToSchema)]
pub(super) struct Health {
    /// `ok`, or `unavailable` while the store cannot be reached.
    status: &'static str,
    /// This node's id (`--node-id`, default host:port).
    node: String,
    /// `sled` or `postgres`.
    store: &'static str,
}

/// Liveness and readiness: 200 while the server answers and reaches its store; 503 (with the
/// same body, `status: unavailable`) while the store is unreachable. No auth.
#[utoipa::path(
    get, path = "/healthz", operation_id = "healthz", tag = "server",
    security(()),
    responses(
        (status = 200, description = "The server is up and reaches its store", body = Health),
        (status = 503, description = "The store is unreachable", body = Health),
    ),
)]
pub(super) async fn healthz(node: web::Data<Node>) -> HttpResponse {
    let reachable = node.store_reachable().await;
    let mut res = match &reachable {
        Ok(()) => HttpResponse::Ok(),
        Err(_) => HttpResponse::ServiceUnavailable(),
    };
    if reachable.is_err() {
        res.insert_header(("Retry-After", "1"));
    }
    res.json(Health {
        status: if reachable.is_ok() {
            "ok"
        } else {
            "unavailable"
        },
        node: node.id.clone(),
        store: node.kind(),
    })
}

#[derive(Serialize, ToSchema)]
pub(super) struct ClusterView {
    /// `sled` (one node) or `postgres`.
    store: &'static str,
    /// The live nodes: those whose heartbeat is recent, by id.
    nodes: Vec<NodeView>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct NodeView {
    id: String,
    /// The address it listens on.
    addr: String,
    started_at: DateTime<Utc>,
    /// Its last heartbeat.
    last_seen: DateTime<Utc>,
}

/// The nodes serving this Hangar. Admin only.
#[utoipa::path(
    get, path = "/v1/cluster", operation_id = "cluster", tag = "server",
    responses(
        (status = 200, description = "The store and its live nodes", body = ClusterView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
)]
pub(super) async fn cluster(_: Admin, node: web::Data<Node>) -> Result<HttpResponse, ApiError> {
    let nodes = node.members().await?;
    Ok(HttpResponse::Ok().json(ClusterView {
        store: node.kind(),
        nodes: nodes
            .into_iter()
            .map(|m| NodeView {
                id: m.id,
                addr: m.addr,
                started_at: m.started_at,
                last_seen: m.last_seen,
            })
            .collect(),
    }))
}
