//! The small HTTP endpoint: `/healthz`, `/readyz` and `/metrics` (hyper 1, HTTP/1.1).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ops::status::Status;

/// Serves until `stop` is cancelled.
pub(crate) async fn serve(listener: TcpListener, status: Arc<Status>, stop: CancellationToken) {
    let handle = move |request: Request<Incoming>| {
        let response = respond(&request, &status);
        async move { response }
    };
    crate::http::serve("health endpoint", listener, handle, stop).await;
}

fn respond(request: &Request<Incoming>, status: &Status) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match request.uri().path() {
        "/healthz" => {
            if status.loop_alive() {
                text(StatusCode::OK, "ok\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "event loop stuck\n")
            }
        }
        "/readyz" => {
            let readiness = status.readiness();
            let failing = readiness.failing();
            let code = if failing.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::json!({ "ready": failing.is_empty(), "failing": failing });
            Response::builder()
                .status(code)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("a valid response")
        }
        "/metrics" => Response::builder()
            .header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(status.encode_metrics())))
            .expect("a valid response"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz or /metrics\n",
        ),
    }
}

fn text(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a valid response")
}
