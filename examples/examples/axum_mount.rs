//! Mounting leakguard's endpoint in a service's own axum router instead of running the
//! built-in server.
//!
//! ```text
//! cargo run --example axum_mount   # then: curl http://127.0.0.1:3000/metrics
//! ```

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, header};
use axum::routing::get;
use leakguard::endpoint::EndpointRequest;
use leakguard::{Guard, format_bytes};
use std::sync::Arc;

#[global_allocator]
static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;

/// Hands any request to the guard and converts its answer.
async fn leakguard_route(
    axum::extract::State(guard): axum::extract::State<Arc<Guard>>,
    req: Request<Body>,
) -> Response<Body> {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let mut request = EndpointRequest::new(req.method().as_str(), &path_and_query);
    request.authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let answer = guard.handle(&request);
    let mut builder = Response::builder()
        .status(answer.status)
        .header(header::CONTENT_TYPE, answer.content_type);
    for (name, value) in &answer.headers {
        builder = builder.header(*name, value);
    }
    builder
        .body(Body::from(answer.body))
        .unwrap_or_else(|_| Response::new(Body::from("internal error")))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("APP_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    // The built-in endpoint is off: the service's own router serves the same content.
    let guard = Arc::new(Guard::builder().no_endpoint().start()?);
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/metrics", get(leakguard_route))
        .route("/healthz", get(leakguard_route))
        .route("/readyz", get(leakguard_route))
        .route("/debug/leakguard", get(leakguard_route))
        .route("/debug/leakguard/ui", get(leakguard_route))
        .route("/debug/leakguard/history", get(leakguard_route))
        .with_state(Arc::clone(&guard));
    // Through leakguard, so that a re-exec restart hands the socket over to the next image
    // (inherited by name then). It comes non-blocking, as tokio requires.
    let listener = tokio::net::TcpListener::from_std(leakguard::listener("http", addr.as_str())?)?;
    println!(
        "serving on http://{} (resident {}); try /metrics and /debug/leakguard",
        listener.local_addr()?,
        format_bytes(guard.report().memory.resident_bytes.unwrap_or(0))
    );
    axum::serve(listener, app).await?;
    Ok(())
}
