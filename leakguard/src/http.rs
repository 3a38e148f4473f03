//! The built-in debug endpoint server (feature `http`).
//!
//! This module is only the transport: it turns HTTP/1.1 requests into [`EndpointRequest`]s,
//! hands them to a [`Routes`] implementation (the guard, which decides what `/metrics`,
//! `/healthz`, … answer) and writes the [`EndpointResponse`] back.
//!
//! # Design
//!
//! The server runs on **one dedicated OS thread named `leakguard-http`**, which owns a private
//! single-threaded tokio runtime, and **one worker thread named `leakguard-http-worker`**. It
//! therefore works the same whether or not the host service uses tokio, and it never spawns
//! tasks on, blocks, or otherwise touches the host's runtime. Connections are served by hyper's
//! HTTP/1.1 server; HTTP/2 and upgrades are not offered.
//!
//! The probes (`GET`/`HEAD` of [`PROBE_PATHS`] without a query) are answered by
//! [`Routes::handle`] directly on the `leakguard-http` thread, before any other routing and
//! without waiting for the request budget: their routes only read a flag, so they are answered
//! within milliseconds whatever else the endpoint is doing. Every other request runs on the
//! worker thread, one at a time, within its own budget: at most
//! [`max_connections`](ServerOptions::max_connections) requests wait for the worker (beyond that
//! the request is answered `503` at once), and a request the worker has not answered within
//! [`route_budget`](ServerOptions::route_budget) is answered `503` with `Retry-After: 1` (the
//! handler still runs to its end; its answer is dropped). A slow route (a report that
//! symbolizes, a heap profile, a Python route that walks the heap) therefore delays other
//! non-probe requests, never the probes and never the host service.
//!
//! # Limits
//!
//! The endpoint must never stall or bloat the service it watches, so every resource a client
//! can make it hold is bounded (defaults in parentheses, all adjustable in [`ServerOptions`]):
//!
//! | limit | what happens when it is hit |
//! | --- | --- |
//! | [`header_read_timeout`](ServerOptions::header_read_timeout) (5 s) | a client that has not sent a complete request head this long after the connection opened, or after its previous response, is disconnected. This stops "slowloris" clients that trickle headers a byte at a time, and it also closes idle keep-alive connections. |
//! | [`idle_timeout`](ServerOptions::idle_timeout) (15 s) | a connection on which no byte moved in either direction for this long is closed: a client that stalls while sending a body or stops reading its response. |
//! | [`connection_lifetime`](ServerOptions::connection_lifetime) (60 s) | a connection older than this finishes the request in flight and is closed (dropped at most `shutdown_timeout` later). |
//! | [`max_connections`](ServerOptions::max_connections) (64) | up to [`PROBE_CHECKS`] connections beyond it are accepted and get [`PROBE_READ_TIMEOUT`] to send their request line: a liveness or readiness probe (`GET`/`HEAD` of [`PROBE_PATHS`], no query) is answered by its route, so that a probe still gets through a flood of connections once it is accepted. Anything else is answered `503 Service Unavailable` with `Connection: close` and closed, [`REFUSE_DELAY`] after it was accepted: a client that reconnects as soon as it is refused cannot make the endpoint accept and refuse connections in a tight loop. While that many are held, further connections are not accepted: they wait in the kernel's accept queue, costing the process nothing (and a probe among them waits too; when the queue is full, the kernel drops new connection attempts and the client retries a second or more later). The churn this allows, at most `PROBE_CHECKS` connections per `REFUSE_DELAY`, cost the endpoint's thread about 5% of a core against a client holding a thousand connections. |
//! | [`max_request_rate`](ServerOptions::max_request_rate) (100 per second) | requests beyond this rate (probes excepted, with a burst of one second's worth) are not refused but wait for their turn before the route runs. A client that floods the endpoint over keep-alive connections is slowed down to this rate instead of being answered as fast as the thread can, so it cannot take the host's CPU; the waiting costs nothing, and at most `max_connections` requests wait at once. |
//! | [`max_header_bytes`](ServerOptions::max_header_bytes) (16 KiB) | a larger request line plus headers is answered `431 Request Header Fields Too Large` and the connection is closed. This also bounds each connection's read buffer. |
//! | [`max_headers`](ServerOptions::max_headers) (64) | more header lines are answered `431` and the connection is closed. |
//! | [`max_body_bytes`](ServerOptions::max_body_bytes) (64 KiB) | no endpoint takes a request body; bodies up to this size are read and discarded, larger ones are answered `413` and the connection is closed. |
//! | [`route_budget`](ServerOptions::route_budget) (10 s) | a request other than a probe that the worker thread has not answered this long after it arrived is answered `503` with `Retry-After: 1`; a request that finds [`max_connections`](ServerOptions::max_connections) others waiting for the worker is answered `503` at once. |
//! | [`shutdown_timeout`](ServerOptions::shutdown_timeout) (1 s) | how long [`Server::stop`] lets requests in flight finish before it drops the remaining connections. |
//!
//! When the endpoint listens on a loopback address, a request whose `Host` header names
//! anything but a loopback name (`localhost`, `*.localhost`, a loopback IP address) is answered
//! `421 Misdirected Request`, probes excepted: a web page the operator visits cannot read the
//! endpoint through DNS rebinding (its requests carry the page's own host name).
//!
//! Malformed requests are answered `400 Bad Request` by hyper and their connection is closed;
//! other connections are unaffected. With the defaults, the memory hostile clients can make the
//! endpoint hold is about `max_connections × (max_header_bytes + a few KiB)`, about 1.5 MiB,
//! plus, for clients slow to read their answer, that answer (until `idle_timeout` drops them).
//!
//! # Responses
//!
//! Every response carries the route's `Content-Type`, a `Content-Length`,
//! `Cache-Control: no-store`, `X-Content-Type-Options: nosniff`, and the route's extra headers (which may replace `Content-Type`
//! or `Cache-Control`; `Content-Length` and `Transfer-Encoding` are always the transport's).
//! `HEAD` is routed as `GET` and answered without a body. Other methods, including unknown
//! ones, are passed to the routes unchanged. A panic inside [`Routes::handle`] is caught and
//! answered `500` with a JSON error (the panic message is still printed by the panic hook);
//! the server keeps serving. (This needs `panic = "unwind"`, Rust's default.) A status outside
//! `200..=599` from the routes is also answered `500`.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use leakguard::endpoint::{EndpointRequest, EndpointResponse, Routes, TEXT};
//! use leakguard::http::{Server, ServerOptions};
//!
//! struct Hello;
//! impl Routes for Hello {
//!     fn handle(&self, request: &EndpointRequest) -> EndpointResponse {
//!         EndpointResponse::new(200, TEXT, format!("hello from {}\n", request.path))
//!     }
//! }
//!
//! # fn main() -> leakguard::Result<()> {
//! let mut options = ServerOptions::default();
//! options.max_connections = 16;
//! let mut server = Server::bind("127.0.0.1:0", Arc::new(Hello), options)?;
//! println!("debug endpoint on http://{}/", server.local_addr());
//! server.stop();
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::endpoint::{EndpointRequest, EndpointResponse, Routes};
use crate::error::{Error, Result};

/// Name of the thread that runs the endpoint (accepts connections, answers the probes).
pub const THREAD_NAME: &str = "leakguard-http";
/// Name of the thread that runs every route but the probes.
pub const WORKER_THREAD_NAME: &str = "leakguard-http-worker";

/// hyper refuses read buffers smaller than this (`max_buf_size` panics below it).
const MIN_BUF_SIZE: usize = 8192;

/// How long the accept loop pauses after an accept error (e.g. out of file descriptors),
/// so that a persistent error does not turn into a busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Paths of the probes answered even beyond [`ServerOptions::max_connections`].
pub const PROBE_PATHS: [&str; 2] = ["/healthz", "/readyz"];
/// Connections beyond the cap held at once to look for a probe; while that many are held, no
/// further connection is accepted (they wait in the kernel's accept queue).
pub const PROBE_CHECKS: usize = 64;
/// How long a connection beyond the cap has to send its request line.
pub const PROBE_READ_TIMEOUT: Duration = Duration::from_millis(200);
/// How long after it was accepted a connection beyond the cap that is not a probe is refused.
/// Holding it costs nothing, while refusing it at once would let a client that reconnects
/// immediately keep the endpoint busy accepting and refusing.
pub const REFUSE_DELAY: Duration = Duration::from_millis(50);
/// Bytes of a request read beyond the cap: enough for a probe's request line.
const PROBE_LINE_MAX: usize = 128;

/// What a connection beyond [`ServerOptions::max_connections`] receives before it is closed.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
content-length: 61\r\n\
cache-control: no-store\r\n\
connection: close\r\n\
\r\n\
{\"error\":\"too many connections to the endpoint\",\"status\":503}";

/// Limits and timeouts of the debug endpoint server.
///
/// The defaults suit an endpoint scraped by Prometheus and queried by hand; see the
/// [module documentation](self) for what each limit protects against. The struct is
/// `#[non_exhaustive]`: start from [`ServerOptions::default`] and change the fields you need.
///
/// ```
/// use std::time::Duration;
/// let mut options = leakguard::http::ServerOptions::default();
/// options.header_read_timeout = Duration::from_secs(2);
/// options.max_connections = 8;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Time a client has to send a complete request head (request line and headers), counted
    /// from when the connection opens or its previous response was written. Also closes idle
    /// keep-alive connections. Default 5 s. Must be non-zero.
    pub header_read_timeout: Duration,
    /// A connection on which no byte was read or written for this long is closed (a stalled
    /// request body, a client that does not read its response). Default 15 s. Must be non-zero.
    pub idle_timeout: Duration,
    /// A connection older than this is closed after its request in flight. Default 60 s.
    /// Must be non-zero.
    pub connection_lifetime: Duration,
    /// Connections served at once; further ones are looked at for a probe, then get a `503`
    /// and are closed (see the [module documentation](self)). Default 64. Must be at least 1.
    pub max_connections: usize,
    /// Requests answered per second across all connections, liveness and readiness probes
    /// excepted, with a burst of one second's worth. Requests beyond it wait for their turn
    /// (they are not refused), which slows a flooding client down to this rate. Default 100.
    /// Must be at least 1.
    pub max_request_rate: u32,
    /// Largest request head (request line plus headers) in bytes; larger ones get a `431`.
    /// Default 16 KiB. Each connection's read buffer is bounded by this value, or by 8 KiB if it
    /// is smaller (hyper's minimum).
    pub max_header_bytes: usize,
    /// Most header lines in a request; more get a `431`. Default 64. Must be at least 1.
    pub max_headers: usize,
    /// Largest request body read (and discarded); larger ones get a `413`. Default 64 KiB.
    pub max_body_bytes: usize,
    /// How long [`Server::stop`] waits for requests in flight before it drops the remaining
    /// connections. Default 1 s.
    pub shutdown_timeout: Duration,
    /// How long a request other than a probe may wait for, and run on, the worker thread
    /// before it is answered `503` (its handler still runs to its end). Default 10 s. Must be
    /// non-zero.
    pub route_budget: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            connection_lifetime: Duration::from_secs(60),
            max_connections: 64,
            max_request_rate: 100,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 64 * 1024,
            shutdown_timeout: Duration::from_secs(1),
            route_budget: Duration::from_secs(10),
        }
    }
}

impl ServerOptions {
    /// Rejects values that would make the endpoint unusable.
    fn validate(&self) -> Result<()> {
        let durations = [
            (
                "ServerOptions::header_read_timeout",
                self.header_read_timeout,
            ),
            ("ServerOptions::idle_timeout", self.idle_timeout),
            (
                "ServerOptions::connection_lifetime",
                self.connection_lifetime,
            ),
            ("ServerOptions::route_budget", self.route_budget),
        ];
        for (name, value) in durations {
            if value.is_zero() {
                return Err(Error::config(name, "0s", "must be longer than zero"));
            }
        }
        let counts = [
            ("ServerOptions::max_connections", self.max_connections),
            ("ServerOptions::max_headers", self.max_headers),
            ("ServerOptions::max_header_bytes", self.max_header_bytes),
            (
                "ServerOptions::max_request_rate",
                self.max_request_rate as usize,
            ),
        ];
        for (name, value) in counts {
            if value == 0 {
                return Err(Error::config(name, "0", "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// The running debug endpoint server.
///
/// Created by [`Server::bind`] or [`Server::start`]; stopped by [`Server::stop`] or when
/// dropped.
#[must_use = "the endpoint stops as soon as the Server is dropped"]
pub struct Server {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    worker: Option<JoinHandle<()>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl Server {
    /// Binds `addr` (e.g. `"127.0.0.1:9464"`) and serves `routes` there, as [`Server::start`]
    /// does.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the address when it cannot be bound (e.g. "binding the debug
    /// endpoint to 127.0.0.1:9464: Address already in use"), and the errors of
    /// [`Server::start`].
    pub fn bind<A>(addr: A, routes: Arc<dyn Routes>, options: ServerOptions) -> Result<Server>
    where
        A: ToSocketAddrs + fmt::Display,
    {
        let listener = std::net::TcpListener::bind(&addr).map_err(|source| Error::Io {
            what: format!("binding the debug endpoint to {addr}"),
            source,
        })?;
        Self::start(listener, routes, options)
    }

    /// Serves `routes` on `listener` on a new thread named `leakguard-http`.
    ///
    /// The listener is switched to non-blocking mode and owned by the server from now on; it
    /// is closed by [`Server::stop`]. This function returns once the server is ready to accept
    /// connections. It may be called from inside or outside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when an option is out of range, [`Error::Io`] when the listener cannot
    /// be set up or the thread or its runtime cannot be created.
    pub fn start(
        listener: std::net::TcpListener,
        routes: Arc<dyn Routes>,
        options: ServerOptions,
    ) -> Result<Server> {
        Self::start_closing_when(listener, routes, options, Arc::new(|| false))
    }

    /// [`Server::start`], and while `closing()` is true every answer carries
    /// `Connection: close` and the connection is closed after it: during a restart's drain,
    /// a keep-alive client does not reuse a connection that is about to close.
    ///
    /// # Errors
    ///
    /// As [`Server::start`].
    pub fn start_closing_when(
        listener: std::net::TcpListener,
        routes: Arc<dyn Routes>,
        options: ServerOptions,
        closing: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Result<Server> {
        options.validate()?;
        let local_addr = listener.local_addr().map_err(|source| Error::Io {
            what: "reading the debug endpoint's listening address".to_owned(),
            source,
        })?;
        listener.set_nonblocking(true).map_err(|source| Error::Io {
            what: format!("making the debug endpoint's listener on {local_addr} non-blocking"),
            source,
        })?;

        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(options.max_connections);
        let worker_routes = Arc::clone(&routes);
        let worker_thread = std::thread::Builder::new()
            .name(WORKER_THREAD_NAME.to_owned())
            .spawn(move || work(queue, worker_routes))
            .map_err(|source| Error::Io {
                what: format!("spawning the {WORKER_THREAD_NAME} thread"),
                source,
            })?;
        let worker = Worker {
            jobs,
            loopback: local_addr.ip().is_loopback(),
            closing,
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<()>>(1);
        // On failure, `worker` (the only sender) is dropped with the closure, which ends the
        // worker thread.
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || run(listener, routes, worker, options, shutdown_rx, ready_tx))
            .map_err(|source| Error::Io {
                what: format!("spawning the {THREAD_NAME} thread"),
                source,
            })?;

        // The thread reports once its runtime owns the listener (or why it could not).
        let ready = ready_rx.recv().unwrap_or_else(|_| {
            Err(Error::Io {
                what: format!("starting the {THREAD_NAME} thread"),
                source: io::Error::other("the thread exited during setup"),
            })
        });
        let mut server = Server {
            local_addr,
            shutdown,
            thread: Some(thread),
            worker: Some(worker_thread),
        };
        match ready {
            Ok(()) => Ok(server),
            Err(error) => {
                server.stop();
                Err(error)
            }
        }
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the server: stops accepting and closes the listening socket, lets requests in
    /// flight finish for at most [`ServerOptions::shutdown_timeout`], closes every connection
    /// and joins the thread. Idle and slow clients do not delay it beyond that deadline (a
    /// route handler that is running is always allowed to return).
    ///
    /// Idempotent; dropping the `Server` does the same. When called from one of the server's
    /// own threads (from inside a route), it signals the stop and returns without joining.
    pub fn stop(&mut self) {
        // send_replace never fails, even once the thread is gone.
        self.shutdown.send_replace(true);
        let current = std::thread::current().id();
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() == current {
                return;
            }
            if thread.join().is_err() {
                tracing::error!("the {THREAD_NAME} thread panicked");
            }
        }
        // The server thread is gone, and with it every sender of jobs: the worker ends after
        // the handler it runs, if any.
        if let Some(worker) = self.worker.take() {
            if worker.thread().id() == current {
                return;
            }
            if worker.join().is_err() {
                tracing::error!("the {WORKER_THREAD_NAME} thread panicked");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The body of the `leakguard-http` thread.
fn run(
    listener: std::net::TcpListener,
    routes: Arc<dyn Routes>,
    worker: Worker,
    options: ServerOptions,
    shutdown: watch::Receiver<bool>,
    ready: std::sync::mpsc::SyncSender<Result<()>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(source) => {
            // If start() is gone there is nobody to tell; ignoring is right.
            let _ = ready.send(Err(Error::Io {
                what: "creating the debug endpoint's runtime".to_owned(),
                source,
            }));
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(source) => {
                let _ = ready.send(Err(Error::Io {
                    what: "registering the debug endpoint's listener".to_owned(),
                    source,
                }));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        drop(ready);
        serve(
            listener,
            routes,
            Arc::new(worker),
            Arc::new(options),
            shutdown,
        )
        .await;
    });
    // Dropping the runtime drops every remaining connection task, closing its socket.
}

/// The accept loop, then the graceful shutdown.
async fn serve(
    listener: TcpListener,
    routes: Arc<dyn Routes>,
    worker: Arc<Worker>,
    options: Arc<ServerOptions>,
    mut shutdown: watch::Receiver<bool>,
) {
    let http = http_builder(&options);
    let pacer = Arc::new(Pacer::new(
        options.max_request_rate,
        options.max_connections,
    ));
    let mut connections = JoinSet::new();
    let mut probe_checks = JoinSet::new();
    while !*shutdown.borrow_and_update() {
        tokio::select! {
            biased;
            // A change, or the Server gone (Err): stop either way.
            _ = shutdown.changed() => break,
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = finished {
                    tracing::error!(%error, "a debug endpoint connection task failed");
                }
            }
            Some(_) = probe_checks.join_next(), if !probe_checks.is_empty() => {}
            // Beyond the cap and with every probe check busy, connections wait in the kernel's
            // accept queue until one of either finishes.
            accepted = listener.accept(),
                if connections.len() < options.max_connections || probe_checks.len() < PROBE_CHECKS
                => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= options.max_connections {
                        probe_checks.spawn(probe_or_refuse(stream, peer, Arc::clone(&routes)));
                        continue;
                    }
                    // Latency matters more than packet count here; failure is harmless.
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(
                        stream,
                        http.clone(),
                        Arc::clone(&routes),
                        Arc::clone(&worker),
                        Arc::clone(&options),
                        Arc::clone(&pacer),
                        shutdown.clone(),
                    ));
                }
                Err(error) => {
                    if is_resource_exhaustion(&error) {
                        tracing::warn!(%error, "the debug endpoint cannot accept connections");
                    } else {
                        tracing::debug!(%error, "accepting a debug endpoint connection failed");
                    }
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                    }
                }
            },
        }
    }
    // Release the port first, then give connections (which saw the same signal and shut down
    // gracefully) a bounded time to finish.
    drop(listener);
    let drained = tokio::time::timeout(options.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            remaining = connections.len(),
            "dropping debug endpoint connections at shutdown"
        );
    }
    connections.abort_all();
    probe_checks.abort_all();
}

/// Whether an accept error means the process or system is out of something.
fn is_resource_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// A connection beyond the cap: answers it by its route if its request line, sent within
/// [`PROBE_READ_TIMEOUT`], is a probe (`GET`/`HEAD` of one of [`PROBE_PATHS`], no query);
/// otherwise refuses it like [`refuse`], [`REFUSE_DELAY`] after it was accepted. Never holds
/// more than [`PROBE_LINE_MAX`] bytes.
async fn probe_or_refuse(stream: TcpStream, peer: SocketAddr, routes: Arc<dyn Routes>) {
    let accepted = Instant::now();
    let mut buf = [0u8; PROBE_LINE_MAX];
    let mut len = 0;
    let _ = tokio::time::timeout(PROBE_READ_TIMEOUT, async {
        while len < buf.len() && !buf[..len].contains(&b'\n') {
            if stream.readable().await.is_err() {
                break;
            }
            match stream.try_read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
    })
    .await;
    let Some((method, path)) = probe_request(&buf[..len]) else {
        tokio::time::sleep_until(accepted + REFUSE_DELAY).await;
        refuse(&stream, peer);
        return;
    };
    let request = EndpointRequest::new(method, path);
    let answer = handle_caught(routes.as_ref(), &request);
    let reason = StatusCode::from_u16(answer.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let body: &[u8] = if method == "HEAD" { &[] } else { &answer.body };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n",
        answer.status,
        answer.content_type,
        answer.body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    let _ = tokio::time::timeout(PROBE_READ_TIMEOUT, async {
        let mut sent = 0;
        while sent < out.len() {
            if stream.writable().await.is_err() {
                break;
            }
            match stream.try_write(&out[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
    })
    .await;
}

/// The request budget ([`ServerOptions::max_request_rate`]): a generic cell rate algorithm
/// that hands each request the moment it may run. Requests within the rate, or within the
/// burst of one second's worth, run at once; later ones are spaced `1 / rate` apart.
#[derive(Debug)]
struct Pacer {
    /// Time between two requests at the sustained rate.
    interval: Duration,
    /// How far ahead of now the schedule may run before requests wait (the burst).
    burst: Duration,
    /// How far ahead of now the schedule may run at all: the burst plus a turn for every
    /// connection. Requests whose connection closed while waiting keep their reservation, so
    /// without this bound a client opening and dropping connections could push the schedule
    /// ever further.
    horizon: Duration,
    /// The theoretical arrival time of the next request.
    next: parking_lot::Mutex<Option<Instant>>,
}

impl Pacer {
    fn new(rate: u32, connections: usize) -> Pacer {
        let rate = rate.max(1);
        let interval = Duration::from_secs(1) / rate;
        let burst = interval * (rate - 1);
        let turns = u32::try_from(connections).unwrap_or(u32::MAX);
        Pacer {
            interval,
            burst,
            horizon: burst.saturating_add(interval.saturating_mul(turns)),
            next: parking_lot::Mutex::new(None),
        }
    }

    /// Reserves a turn for a request arriving at `now`; returns when it may run.
    fn reserve(&self, now: Instant) -> Instant {
        let mut next = self.next.lock();
        let scheduled = next
            .map_or(now, |next| next.max(now))
            .min(now + self.horizon);
        *next = Some(scheduled + self.interval);
        // A schedule no further ahead than the burst runs at once.
        scheduled
            .checked_sub(self.burst)
            .map_or(now, |start| start.max(now))
    }
}

/// `(method, path)` when `head` starts with a probe's request line.
fn probe_request(head: &[u8]) -> Option<(&'static str, &'static str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let method = match parts.next()? {
        "GET" => "GET",
        "HEAD" => "HEAD",
        _ => return None,
    };
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = PROBE_PATHS.into_iter().find(|p| *p == target)?;
    Some((method, path))
}

/// Answers a connection beyond the cap with a 503 (best effort, never waiting) and closes it.
fn refuse(stream: &TcpStream, peer: SocketAddr) {
    tracing::debug!(%peer, "refusing a debug endpoint connection: too many connections");
    // A fresh socket's send buffer always has room for this; if not, the client sees a close.
    let _ = stream.try_write(BUSY_RESPONSE);
}

/// hyper's HTTP/1 server configured from `options`.
fn http_builder(options: &ServerOptions) -> hyper::server::conn::http1::Builder {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_header_size(options.max_header_bytes)
        .max_headers(options.max_headers)
        .max_buf_size(options.max_header_bytes.max(MIN_BUF_SIZE))
        .keep_alive(true)
        .half_close(false);
    http
}

/// Serves one connection until it ends, is idle too long, reaches its lifetime or the server
/// stops.
async fn serve_connection(
    stream: TcpStream,
    http: hyper::server::conn::http1::Builder,
    routes: Arc<dyn Routes>,
    worker: Arc<Worker>,
    options: Arc<ServerOptions>,
    pacer: Arc<Pacer>,
    mut shutdown: watch::Receiver<bool>,
) {
    let activity = Activity::new();
    let io = TokioIo::new(TrackedStream {
        inner: stream,
        activity: activity.clone(),
    });
    let service_activity = activity.clone();
    let service_options = Arc::clone(&options);
    let service = hyper::service::service_fn(move |request| {
        let routes = Arc::clone(&routes);
        let worker = Arc::clone(&worker);
        let options = Arc::clone(&service_options);
        let pacer = Arc::clone(&pacer);
        let activity = service_activity.clone();
        async move {
            let mut response = respond(request, routes.as_ref(), &worker, &options, &pacer).await;
            if (worker.closing)() {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // A long handler must not count as idleness.
            activity.touch();
            Ok::<_, Infallible>(response)
        }
    });
    let connection = http.serve_connection(io, service);
    tokio::pin!(connection);

    let lifetime = tokio::time::sleep(options.connection_lifetime);
    tokio::pin!(lifetime);
    // Set once a graceful shutdown has begun: the hard deadline after which the connection is
    // dropped even if the client never completes its request.
    let mut deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;

    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "debug endpoint connection ended with an error");
                }
                return;
            }
            () = activity.idle(options.idle_timeout) => {
                tracing::debug!("closing an idle debug endpoint connection");
                return;
            }
            () = &mut lifetime, if deadline.is_none() => {
                connection.as_mut().graceful_shutdown();
                deadline = Some(Box::pin(tokio::time::sleep(options.shutdown_timeout)));
            }
            _ = shutdown.changed(), if deadline.is_none() => {
                connection.as_mut().graceful_shutdown();
                deadline = Some(Box::pin(tokio::time::sleep(options.shutdown_timeout)));
            }
            () = async { if let Some(deadline) = deadline.as_mut() { deadline.await } },
                if deadline.is_some() => {
                return;
            }
        }
    }
}

/// Turns one hyper request into an endpoint request, asks the routes, and builds the answer.
async fn respond(
    request: Request<Incoming>,
    routes: &dyn Routes,
    worker: &Worker,
    options: &ServerOptions,
    pacer: &Pacer,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();

    // No endpoint takes a body: read (and drop) small ones so the connection can be reused.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let too_large = match declared {
        Some(length) => usize::try_from(length).map_or(true, |l| l > options.max_body_bytes),
        None => false,
    };
    if too_large {
        return closing(EndpointResponse::error(413, "request body too large"));
    }
    match drain_body(body, options.max_body_bytes).await {
        Ok(()) => {}
        Err(BodyError::TooLarge) => {
            return closing(EndpointResponse::error(413, "request body too large"));
        }
        Err(BodyError::Read(error)) => {
            tracing::debug!(%error, "reading a debug endpoint request body failed");
            return closing(EndpointResponse::error(400, "unreadable request body"));
        }
    }

    // HEAD is answered like GET; hyper leaves the body out.
    let method = if parts.method == Method::HEAD {
        Method::GET.as_str()
    } else {
        parts.method.as_str()
    };
    // Probes are never held back: an orchestrator must see a live service during a flood.
    let probe =
        (method == "GET" && parts.uri.query().is_none()) && PROBE_PATHS.contains(&parts.uri.path());
    let mut endpoint_request = EndpointRequest::new(method, "/");
    endpoint_request.path = parts.uri.path().to_owned();
    endpoint_request.query = parts.uri.query().unwrap_or_default().to_owned();
    if probe {
        // Answered here, before routing anything else: a probe's route only reads a flag.
        return to_response(handle_caught(routes, &endpoint_request));
    }
    if worker.loopback
        && let Some(host) = parts.headers.get(header::HOST)
        && !is_loopback_host(host.as_bytes())
    {
        tracing::debug!(host = ?host, "refusing a debug endpoint request for a foreign host");
        return to_response(EndpointResponse::error(
            421,
            "the endpoint listens on loopback and answers only requests for a loopback host name (localhost, 127.0.0.1, [::1])",
        ));
    }
    let arrived = Instant::now();
    tokio::time::sleep_until(pacer.reserve(arrived)).await;
    endpoint_request.authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let answer = worker
        .ask(endpoint_request, arrived + options.route_budget)
        .await;
    to_response(answer)
}

/// A request for the worker thread and where its answer goes.
struct Job {
    request: EndpointRequest,
    reply: tokio::sync::oneshot::Sender<EndpointResponse>,
}

/// The connection tasks' side of the worker thread.
struct Worker {
    /// Bounded: at most `max_connections` requests wait for the worker.
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// Whether the endpoint listens on a loopback address (the `Host` header is checked).
    loopback: bool,
    /// While true, every answer closes its connection (a restart's drain).
    closing: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl Worker {
    /// Runs `request` on the worker thread; a `503` when the worker's queue is full or when no
    /// answer came by `deadline`.
    async fn ask(&self, request: EndpointRequest, deadline: Instant) -> EndpointResponse {
        let (reply, answer) = tokio::sync::oneshot::channel();
        match self.jobs.try_send(Job { request, reply }) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                return busy("too many requests wait for the endpoint's worker: try again later");
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return EndpointResponse::error(503, "the endpoint is stopping");
            }
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(answer)) => answer,
            // The worker dropped the job: it is stopping.
            Ok(Err(_)) => EndpointResponse::error(503, "the endpoint is stopping"),
            Err(_) => {
                busy("the endpoint's worker did not answer within its budget: try again later")
            }
        }
    }
}

/// A `503` asking the client to come back a second later.
fn busy(message: &str) -> EndpointResponse {
    let mut answer = EndpointResponse::error(503, message);
    answer.headers.push(("Retry-After", "1".to_owned()));
    answer
}

/// The body of the `leakguard-http-worker` thread: answers jobs one at a time until every
/// sender is gone. A job whose client gave up (its budget ran out, its connection closed) is
/// skipped.
fn work(queue: std::sync::mpsc::Receiver<Job>, routes: Arc<dyn Routes>) {
    while let Ok(job) = queue.recv() {
        if job.reply.is_closed() {
            continue;
        }
        let answer = handle_caught(routes.as_ref(), &job.request);
        // The receiver may be gone by now (budget exhausted): nothing to do then.
        let _ = job.reply.send(answer);
    }
}

/// Calls the routes, turning a panic into a `500` (the panic hook has printed it already).
fn handle_caught(routes: &dyn Routes, request: &EndpointRequest) -> EndpointResponse {
    match catch_unwind(AssertUnwindSafe(|| routes.handle(request))) {
        Ok(answer) => answer,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic payload)".to_owned());
            tracing::error!(
                method = %request.method,
                path = %request.path,
                panic = %message,
                "a debug endpoint route panicked"
            );
            EndpointResponse::error(500, "internal error: the endpoint handler panicked")
        }
    }
}

/// Whether a `Host` header names a loopback host: `localhost`, a name under `.localhost`
/// (RFC 6761), or a loopback IP address, with or without a port.
fn is_loopback_host(host: &[u8]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // "[::1]" or "[::1]:port"
        match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => ip,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Why a request body was not accepted.
enum BodyError {
    TooLarge,
    Read(hyper::Error),
}

/// Reads `body` to its end without keeping it, failing once more than `limit` bytes arrived.
async fn drain_body(mut body: Incoming, limit: usize) -> Result<(), BodyError> {
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        if let Some(data) = frame.data_ref() {
            total = total.saturating_add(data.len());
            if total > limit {
                return Err(BodyError::TooLarge);
            }
        }
    }
    Ok(())
}

/// `answer` as a response that also closes the connection.
fn closing(answer: EndpointResponse) -> Response<Full<Bytes>> {
    let mut response = to_response(answer);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Builds the HTTP response for an endpoint answer.
fn to_response(answer: EndpointResponse) -> Response<Full<Bytes>> {
    let status = match StatusCode::from_u16(answer.status) {
        Ok(status) if (200..=599).contains(&answer.status) => status,
        _ => {
            tracing::error!(
                status = answer.status,
                "a debug endpoint route returned an invalid status"
            );
            return to_response(EndpointResponse::error(
                500,
                &format!("internal error: invalid status {}", answer.status),
            ));
        }
    };
    let bodiless = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let body = if bodiless {
        Bytes::new()
    } else {
        Bytes::from(answer.body)
    };
    let length = body.len();

    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    match HeaderValue::from_str(answer.content_type) {
        Ok(value) => {
            headers.insert(header::CONTENT_TYPE, value);
        }
        Err(_) => tracing::warn!(
            content_type = answer.content_type,
            "a debug endpoint route returned an invalid Content-Type"
        ),
    }
    if !bodiless {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Browsers must not guess a type: a JSON error or a text answer is never run as HTML.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );

    // Route headers replace the defaults above, except the framing, which is ours.
    let mut replaced: Vec<HeaderName> = Vec::new();
    for (name, value) in answer.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            tracing::warn!(
                header = name,
                "a debug endpoint route returned an invalid header"
            );
            continue;
        };
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        if replaced.contains(&name) {
            headers.append(name, value);
        } else {
            headers.insert(name.clone(), value);
            replaced.push(name);
        }
    }
    response
}

/// When bytes last moved on a connection, in milliseconds since the connection opened.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records activity now.
    fn touch(&self) {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(elapsed, Ordering::Relaxed);
    }

    /// Completes once nothing happened for `timeout`.
    fn idle(&self, timeout: Duration) -> impl Future<Output = ()> + use<> {
        let activity = self.clone();
        async move {
            loop {
                let last = Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
                let deadline = activity.start + last + timeout;
                if Instant::now() >= deadline {
                    return;
                }
                tokio::time::sleep_until(deadline).await;
            }
        }
    }
}

/// A TCP stream that records when bytes move, for the idle timeout.
struct TrackedStream {
    inner: TcpStream,
    activity: Activity,
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_response_content_length_matches_its_body() {
        let text = std::str::from_utf8(BUSY_RESPONSE).expect("ASCII");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        let declared = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .and_then(|value| value.parse::<usize>().ok());
        assert_eq!(declared, Some(body.len()));
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON body");
        assert_eq!(json["status"], 503);
    }

    #[test]
    fn the_pacer_lets_a_burst_through_then_spaces_requests_and_bounds_its_schedule() {
        let pacer = Pacer::new(10, 4);
        let now = Instant::now();
        let ms = Duration::from_millis;
        // A second's worth at once.
        for _ in 0..10 {
            assert_eq!(pacer.reserve(now), now);
        }
        // Then one every 100 ms, for at most a turn per connection ahead.
        for turn in 1..=4 {
            assert_eq!(pacer.reserve(now), now + ms(100 * turn));
        }
        // Requests that never ran (their connection closed) do not push the schedule further.
        for _ in 0..1000 {
            assert_eq!(pacer.reserve(now), now + ms(400));
        }
        // Time passing frees turns again: once the schedule is behind now, a request runs
        // at once.
        let later = now + ms(1900);
        assert_eq!(pacer.reserve(later), later);
        // A rate of one a second has no burst beyond the request itself.
        let slow = Pacer::new(1, 64);
        assert_eq!(slow.reserve(now), now);
        assert_eq!(slow.reserve(now), now + ms(1000));
    }

    #[test]
    fn only_a_probe_request_line_is_a_probe() {
        assert_eq!(
            probe_request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"),
            Some(("GET", "/healthz"))
        );
        assert_eq!(
            probe_request(b"HEAD /readyz HTTP/1.0\r\n"),
            Some(("HEAD", "/readyz"))
        );
        for line in [
            &b"GET /metrics HTTP/1.1\r\n"[..],
            b"GET /healthz?x=1 HTTP/1.1\r\n",
            b"POST /healthz HTTP/1.1\r\n",
            b"GET /healthz HTTP/2\r\n",
            b"GET /healthz",
            b"GET  /healthz HTTP/1.1\r\n",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(probe_request(line), None, "{line:?}");
        }
    }

    #[test]
    fn default_options_are_valid_and_zero_limits_are_rejected() {
        assert!(ServerOptions::default().validate().is_ok());
        let options = ServerOptions {
            max_connections: 0,
            ..ServerOptions::default()
        };
        assert!(matches!(options.validate(), Err(Error::Config { .. })));
        let options = ServerOptions {
            header_read_timeout: Duration::ZERO,
            ..ServerOptions::default()
        };
        assert!(matches!(options.validate(), Err(Error::Config { .. })));
    }

    #[test]
    fn route_headers_replace_defaults_but_not_framing() {
        let mut answer = EndpointResponse::new(200, crate::endpoint::TEXT, "abc");
        answer.headers = vec![
            ("Cache-Control", "max-age=5".to_owned()),
            ("Content-Length", "999".to_owned()),
            ("X-Twice", "1".to_owned()),
            ("x-twice", "2".to_owned()),
            ("Bad Name", "x".to_owned()),
        ];
        let response = to_response(answer);
        let headers = response.headers();
        assert_eq!(headers[header::CACHE_CONTROL], "max-age=5");
        assert_eq!(headers[header::CONTENT_LENGTH], "3");
        assert_eq!(headers.get_all("x-twice").iter().count(), 2);
        assert_eq!(headers[header::CONTENT_TYPE], crate::endpoint::TEXT);
    }

    #[test]
    fn only_loopback_names_are_loopback_hosts() {
        for host in [
            "localhost",
            "localhost:9464",
            "LOCALHOST.",
            "app.localhost:80",
            "127.0.0.1",
            "127.1.2.3:9464",
            "[::1]",
            "[::1]:9464",
        ] {
            assert!(is_loopback_host(host.as_bytes()), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9464",
            "localhost.evil.example",
            "10.0.0.1:9464",
            "[::2]:80",
            "[::1]x",
            "localhost:port",
            "",
            "\u{ff}",
        ] {
            assert!(!is_loopback_host(host.as_bytes()), "{host}");
        }
        assert!(!is_loopback_host(b"\xff"));
    }

    #[test]
    fn invalid_status_becomes_500() {
        let response = to_response(EndpointResponse::new(1000, crate::endpoint::TEXT, "x"));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let response = to_response(EndpointResponse::new(101, crate::endpoint::TEXT, "x"));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
