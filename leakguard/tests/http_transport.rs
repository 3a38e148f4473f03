//! The debug endpoint's transport over real TCP sockets: request/response mapping, and the
//! limits that keep hostile or broken clients from stalling or bloating the host service.
#![cfg(feature = "http")]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use leakguard::Error;
use leakguard::endpoint::{EndpointRequest, EndpointResponse, Routes, TEXT};
use leakguard::http::{Server, ServerOptions, THREAD_NAME, WORKER_THREAD_NAME};

/// Size of the `/big` answer: more than loopback socket buffers hold.
const BIG: usize = 32 * 1024 * 1024;
/// How long a test client waits for any single read before it gives up.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A test double for the guard's routes.
struct TestRoutes;

impl Routes for TestRoutes {
    fn handle(&self, request: &EndpointRequest) -> EndpointResponse {
        match request.path.as_str() {
            "/panic" => panic!("test route panicked on purpose"),
            "/big" => EndpointResponse::new(200, "application/octet-stream", vec![b'x'; BIG]),
            "/bad-status" => EndpointResponse::new(1000, TEXT, "nope"),
            "/thread" => EndpointResponse::new(
                200,
                TEXT,
                thread::current().name().unwrap_or_default().to_owned(),
            ),
            "/missing" => EndpointResponse::error(404, "no such page"),
            _ => {
                let body = format!(
                    "{} {} ?{} auth={}",
                    request.method,
                    request.path,
                    request.query,
                    request.authorization.as_deref().unwrap_or("-")
                );
                let mut response = EndpointResponse::new(200, TEXT, body);
                response.headers.push(("X-Test-Route", "echo".to_owned()));
                response
            }
        }
    }
}

/// The test routes plus `/gate`, which blocks its caller until the gate opens, standing for a
/// slow route (a report that symbolizes, a heap walk); and `/healthz`, answered at once.
struct GatedRoutes {
    gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    entered: Arc<std::sync::atomic::AtomicUsize>,
}

impl GatedRoutes {
    fn new() -> Self {
        Self {
            gate: Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new())),
            entered: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }
}

impl Routes for GatedRoutes {
    fn handle(&self, request: &EndpointRequest) -> EndpointResponse {
        if request.path == "/gate" {
            self.entered
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (open, changed) = &*self.gate;
            let mut open = open.lock().expect("gate lock");
            while !*open {
                open = changed.wait(open).expect("gate lock");
            }
            return EndpointResponse::new(200, TEXT, "passed the gate");
        }
        TestRoutes.handle(request)
    }
}

fn open_gate(gate: &(std::sync::Mutex<bool>, std::sync::Condvar)) {
    *gate.0.lock().expect("gate lock") = true;
    gate.1.notify_all();
}

/// Waits (bounded) until `condition` holds, polling an observable state.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::yield_now();
        thread::sleep(Duration::from_millis(2));
    }
}

/// The established TCP connections to `port` of this host, from `/proc/net/tcp`: the receive
/// queue of each server side, and the send queue of each client side.
fn loopback_queues(port: u16) -> (Vec<u64>, Vec<u64>) {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port_of = |address: &str| {
        address
            .split_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    let (mut server_side, mut client_side) = (Vec::new(), Vec::new());
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl, local address, remote address, state (01: established), tx_queue:rx_queue.
        let [_, local, remote, state, queues, ..] = fields[..] else {
            continue;
        };
        let Some((tx, rx)) = queues.split_once(':') else {
            continue;
        };
        let (tx, rx) = (
            u64::from_str_radix(tx, 16).unwrap_or(u64::MAX),
            u64::from_str_radix(rx, 16).unwrap_or(u64::MAX),
        );
        if state != "01" {
            continue;
        }
        if port_of(local) == Some(port) {
            server_side.push(rx);
        } else if port_of(remote) == Some(port) {
            client_side.push(tx);
        }
    }
    (server_side, client_side)
}

fn start(options: ServerOptions) -> Server {
    Server::bind("127.0.0.1:0", Arc::new(TestRoutes), options).expect("start the server")
}

/// One parsed HTTP response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(CLIENT_TIMEOUT))
        .expect("write timeout");
    stream
}

/// Parses a response head; returns it (with an empty body) and its length in bytes.
fn parse_head(bytes: &[u8]) -> Option<(Reply, usize)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    Some((reply, end))
}

/// Reads one response from a keep-alive connection (framed by Content-Length).
fn read_reply(stream: &mut TcpStream, head_request: bool) -> io::Result<Reply> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (mut reply, head_len) = loop {
        if let Some(parsed) = parse_head(&buf) {
            break parsed;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no response head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    reply.body = buf.split_off(head_len);
    let length = if head_request {
        0
    } else {
        reply
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .ok_or_else(|| io::Error::other("no content-length"))?
    };
    while reply.body.len() < length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
        }
        reply.body.extend_from_slice(&chunk[..n]);
    }
    Ok(reply)
}

/// Sends `raw` on a new connection and reads everything until the server closes it.
fn exchange(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = connect(addr);
    stream.write_all(raw).expect("send the request");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read the response");
    let (mut reply, head_len) = parse_head(&bytes).expect("a response head");
    reply.body = bytes.split_off(head_len);
    reply
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// What a raw client observes when it next reads.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// A response with this status arrived.
    Status(u16),
    /// The server closed (or reset) the connection without answering.
    Closed,
    /// Nothing happened within the wait.
    StillOpen,
}

fn outcome(stream: &mut TcpStream, wait: Duration) -> Outcome {
    stream.set_read_timeout(Some(wait)).expect("read timeout");
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => Outcome::Closed,
        Ok(n) => {
            let text = String::from_utf8_lossy(&buf[..n]);
            match text.split(' ').nth(1).and_then(|s| s.parse().ok()) {
                Some(status) => Outcome::Status(status),
                None => panic!("unexpected bytes from the server: {text:?}"),
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Outcome::StillOpen
        }
        Err(_) => Outcome::Closed,
    }
}

/// Waits until the server closes `stream`; returns how long that took from `since`.
fn wait_for_close(stream: &mut TcpStream, since: Instant, limit: Duration) -> Duration {
    stream.set_read_timeout(Some(limit)).expect("read timeout");
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return since.elapsed(),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the server did not close the connection within {limit:?}")
            }
            Err(_) => return since.elapsed(),
        }
    }
}

/// A keep-alive connection the server has accepted and answered once (so it counts against
/// the cap from now on).
fn served_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr);
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let reply = read_reply(&mut stream, false).expect("a reply on the held connection");
    assert_eq!(reply.status, 200);
    stream
}

fn assert_serving(addr: SocketAddr) {
    let reply = get(addr, "/echo");
    assert_eq!(reply.status, 200, "the server must keep serving");
    assert_eq!(reply.text(), "GET /echo ? auth=-");
}

#[test]
fn get_returns_status_content_type_headers_and_body() {
    let server = start(ServerOptions::default());
    let reply = get(server.local_addr(), "/echo");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some(TEXT));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("x-test-route"), Some("echo"));
    assert_eq!(reply.text(), "GET /echo ? auth=-");
    assert_eq!(reply.header("content-length"), Some("18"));

    let reply = get(server.local_addr(), "/missing");
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
    assert_eq!(json["error"], "no such page");
}

#[test]
fn query_string_and_authorization_are_passed_to_routes() {
    let server = start(ServerOptions::default());
    let reply = exchange(
        server.local_addr(),
        b"GET /debug/leakguard?format=json&x=%20y HTTP/1.1\r\nHost: localhost\r\n\
          Authorization: Bearer s3cret\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        "GET /debug/leakguard ?format=json&x=%20y auth=Bearer s3cret"
    );
}

#[test]
fn head_is_answered_like_get_without_a_body() {
    let server = start(ServerOptions::default());
    let get_reply = get(server.local_addr(), "/echo?a=1");
    let head_reply = exchange(
        server.local_addr(),
        b"HEAD /echo?a=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(head_reply.status, 200);
    assert!(head_reply.body.is_empty(), "HEAD must not carry a body");
    assert_eq!(
        head_reply.header("content-length"),
        get_reply.header("content-length")
    );
    assert_eq!(head_reply.header("content-type"), Some(TEXT));
    assert_eq!(get_reply.text(), "GET /echo ?a=1 auth=-");
}

#[test]
fn unknown_methods_pass_through_to_routes() {
    let server = start(ServerOptions::default());
    for method in ["POST", "DELETE", "PURGE", "BREW"] {
        let reply = exchange(
            server.local_addr(),
            format!(
                "{method} /debug/leakguard/purge HTTP/1.1\r\nHost: localhost\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.text(),
            format!("{method} /debug/leakguard/purge ? auth=-")
        );
    }
}

#[test]
fn routes_run_on_the_worker_thread_and_probes_on_the_server_thread() {
    let server = start(ServerOptions::default());
    assert_eq!(
        get(server.local_addr(), "/thread").text(),
        WORKER_THREAD_NAME
    );
    assert_eq!(WORKER_THREAD_NAME, "leakguard-http-worker");
    assert_eq!(THREAD_NAME, "leakguard-http");
}

#[test]
fn probes_are_answered_at_once_while_a_slow_route_holds_the_worker() {
    let routes = GatedRoutes::new();
    let gate = Arc::clone(&routes.gate);
    let entered = Arc::clone(&routes.entered);
    let server =
        Server::bind("127.0.0.1:0", Arc::new(routes), ServerOptions::default()).expect("start");
    let addr = server.local_addr();
    // Eight clients ask for the slow route; one of them holds the worker, the others wait.
    let slow: Vec<_> = (0..8)
        .map(|_| thread::spawn(move || get(addr, "/gate")))
        .collect();
    wait_until("the slow route runs", || {
        entered.load(std::sync::atomic::Ordering::SeqCst) == 1
    });
    for path in ["/healthz", "/readyz"] {
        for _ in 0..20 {
            let asked = Instant::now();
            let reply = get(addr, path);
            let took = asked.elapsed();
            assert_eq!(reply.status, 200, "{path}");
            assert_eq!(reply.text(), format!("GET {path} ? auth=-"));
            assert!(
                took < Duration::from_millis(500),
                "{path} took {took:?} while a slow route ran"
            );
        }
    }
    assert_eq!(entered.load(std::sync::atomic::Ordering::SeqCst), 1);
    open_gate(&gate);
    for client in slow {
        let reply = client.join().expect("slow client");
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, "passed the gate")
        );
    }
    assert_serving(addr);
}

#[test]
fn a_route_that_overruns_its_budget_is_answered_503_and_the_worker_queue_is_bounded() {
    let routes = GatedRoutes::new();
    let gate = Arc::clone(&routes.gate);
    let entered = Arc::clone(&routes.entered);
    let mut options = ServerOptions::default();
    options.route_budget = Duration::from_millis(300);
    options.max_connections = 4;
    let server = Server::bind("127.0.0.1:0", Arc::new(routes), options).expect("start");
    let addr = server.local_addr();

    let asked = Instant::now();
    let overrun = get(addr, "/gate");
    let took = asked.elapsed();
    assert_eq!(overrun.status, 503, "{}", overrun.text());
    assert_eq!(overrun.header("retry-after"), Some("1"));
    assert!(overrun.text().contains("budget"), "{}", overrun.text());
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
    // The handler still holds the worker: other requests wait for it within their own
    // budget, and the probes do not wait at all. Requests that gave up still hold their place
    // in the worker's queue (max_connections places): once it is full, the next request is
    // refused at once.
    for _ in 0..4 {
        let reply = get(addr, "/echo");
        assert_eq!(reply.status, 503);
        assert!(reply.text().contains("budget"), "{}", reply.text());
    }
    let full = get(addr, "/echo");
    assert_eq!(full.status, 503);
    assert!(
        full.text().contains("too many requests wait"),
        "{}",
        full.text()
    );
    assert_eq!(get(addr, "/healthz").status, 200);
    open_gate(&gate);
    wait_until("the worker answers again", || {
        get(addr, "/echo").status == 200
    });
    assert_eq!(entered.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_loopback_endpoint_refuses_requests_for_foreign_host_names() {
    let server = start(ServerOptions::default());
    let addr = server.local_addr();
    for host in [
        "localhost",
        &format!("127.0.0.1:{}", addr.port()),
        "[::1]:80",
    ] {
        let reply = exchange(
            addr,
            format!("GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(reply.status, 200, "Host: {host}");
    }
    // A page served from attacker.example whose name was rebound to 127.0.0.1.
    let rebound = exchange(
        addr,
        b"GET /echo HTTP/1.1\r\nHost: attacker.example:9464\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(rebound.status, 421, "{}", rebound.text());
    assert!(rebound.text().contains("loopback"), "{}", rebound.text());
    // Probes answer whatever the host (an orchestrator may name the pod).
    let probe = exchange(
        addr,
        b"GET /readyz HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(probe.status, 200);
}

#[test]
fn keep_alive_connection_serves_several_requests_including_small_bodies() {
    let server = start(ServerOptions::default());
    let mut stream = connect(server.local_addr());
    for i in 0..3 {
        write!(
            stream,
            "POST /echo?i={i} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello"
        )
        .expect("send");
        let reply = read_reply(&mut stream, false).expect("reply");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), format!("POST /echo ?i={i} auth=-"));
    }
}

#[test]
fn big_body_is_sent_whole_with_its_length() {
    let server = start(ServerOptions::default());
    let reply = get(server.local_addr(), "/big");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-length"),
        Some(BIG.to_string().as_str())
    );
    assert_eq!(reply.body.len(), BIG);
    assert!(reply.body.iter().all(|&b| b == b'x'));
}

#[test]
fn panic_in_routes_answers_500_and_the_connection_and_server_keep_working() {
    let server = start(ServerOptions::default());
    let mut stream = connect(server.local_addr());
    stream
        .write_all(b"GET /panic HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let reply = read_reply(&mut stream, false).expect("reply");
    assert_eq!(reply.status, 500);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
    assert_eq!(json["status"], 500);

    // Same connection, then a new one.
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    assert_eq!(read_reply(&mut stream, false).expect("reply").status, 200);
    assert_serving(server.local_addr());
}

#[test]
fn invalid_status_from_routes_answers_500() {
    let server = start(ServerOptions::default());
    let reply = get(server.local_addr(), "/bad-status");
    assert_eq!(reply.status, 500);
    assert_serving(server.local_addr());
}

#[test]
fn slowloris_is_cut_off_by_the_header_timeout_while_others_are_served() {
    let header_timeout = Duration::from_millis(800);
    let mut options = ServerOptions::default();
    options.header_read_timeout = header_timeout;
    let server = start(options);
    let addr = server.local_addr();

    let (started_tx, started_rx) = mpsc::channel();
    let slowloris = thread::spawn(move || {
        let mut stream = connect(addr);
        let connected = Instant::now();
        let mut request = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
            .iter()
            .copied();
        let mut sent = 0usize;
        loop {
            let byte = request.next().unwrap_or(b'a');
            if stream.write_all(&[byte]).is_err() {
                return (connected.elapsed(), Instant::now(), sent, Outcome::Closed);
            }
            sent += 1;
            if sent == 1 {
                let _ = started_tx.send(());
            }
            match outcome(&mut stream, Duration::from_millis(50)) {
                Outcome::StillOpen if connected.elapsed() < Duration::from_secs(20) => {}
                other => return (connected.elapsed(), Instant::now(), sent, other),
            }
        }
    });

    started_rx
        .recv_timeout(CLIENT_TIMEOUT)
        .expect("slowloris started");
    let asked = Instant::now();
    let reply = get(addr, "/echo");
    let answered = Instant::now();
    assert_eq!(reply.status, 200);
    assert!(
        answered - asked < Duration::from_secs(2),
        "a normal client waited {:?} next to a slowloris",
        answered - asked
    );

    let (lasted, cut_at, sent, result) = slowloris.join().expect("slowloris thread");
    assert!(
        matches!(result, Outcome::Closed | Outcome::Status(408)),
        "slowloris outcome {result:?}"
    );
    assert!(
        lasted >= header_timeout.mul_f32(0.9),
        "cut after {lasted:?}, before the header timeout"
    );
    assert!(
        lasted < Duration::from_secs(6),
        "slowloris lasted {lasted:?} ({sent} bytes)"
    );
    assert!(
        answered < cut_at,
        "the normal client must be answered while the slowloris is still connected"
    );
    assert_serving(addr);
}

#[test]
fn idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let mut options = ServerOptions::default();
    options.header_read_timeout = Duration::from_millis(300);
    let server = start(options);
    let mut stream = connect(server.local_addr());
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    assert_eq!(read_reply(&mut stream, false).expect("reply").status, 200);
    let answered = Instant::now();
    let idle = wait_for_close(&mut stream, answered, CLIENT_TIMEOUT);
    assert!(idle >= Duration::from_millis(250), "closed after {idle:?}");
    assert!(idle < Duration::from_secs(5), "closed after {idle:?}");
}

#[test]
fn stalled_request_body_is_closed_after_the_idle_timeout() {
    let mut options = ServerOptions::default();
    options.header_read_timeout = Duration::from_secs(30);
    options.idle_timeout = Duration::from_millis(300);
    let server = start(options);
    let mut stream = connect(server.local_addr());
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nabc")
        .expect("send");
    let sent = Instant::now();
    let lasted = wait_for_close(&mut stream, sent, CLIENT_TIMEOUT);
    assert!(
        lasted >= Duration::from_millis(250),
        "closed after {lasted:?}"
    );
    assert!(lasted < Duration::from_secs(5), "closed after {lasted:?}");
    assert_serving(server.local_addr());
}

#[test]
fn client_that_stops_reading_is_closed_after_the_idle_timeout() {
    let mut options = ServerOptions::default();
    options.idle_timeout = Duration::from_millis(300);
    let server = start(options);
    let mut stream = connect(server.local_addr());
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    // Do not read while the server is stuck on a full socket buffer, until the server has
    // given the connection up (its side is no longer established).
    let port = server.local_addr().port();
    wait_until("the server to give the stalled connection up", || {
        loopback_queues(port).0.is_empty()
    });
    let mut received = Vec::new();
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .expect("read timeout");
    // The connection ends (EOF or reset) long before the whole answer arrives.
    let _ = stream.read_to_end(&mut received);
    assert!(
        received.len() < BIG,
        "received {} bytes of {BIG}",
        received.len()
    );
    assert_serving(server.local_addr());
}

#[test]
fn huge_headers_are_refused_and_the_server_keeps_serving() {
    let server = start(ServerOptions::default());
    let mut request = b"GET /echo HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    let mut i = 0;
    while request.len() < 64 * 1024 {
        request.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "a".repeat(1000)).as_bytes());
        i += 1;
    }
    request.extend_from_slice(b"\r\n");
    let mut stream = connect(server.local_addr());
    // The server may hang up before it has read everything.
    let _ = stream.write_all(&request);
    let result = outcome(&mut stream, CLIENT_TIMEOUT);
    assert!(
        matches!(result, Outcome::Status(431) | Outcome::Closed),
        "64 KiB of headers gave {result:?}"
    );
    assert_serving(server.local_addr());
}

#[test]
fn too_many_header_lines_get_431() {
    let server = start(ServerOptions::default());
    let mut request = b"GET /echo HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    for i in 0..200 {
        request.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let mut stream = connect(server.local_addr());
    let _ = stream.write_all(&request);
    let result = outcome(&mut stream, CLIENT_TIMEOUT);
    assert!(
        matches!(result, Outcome::Status(431) | Outcome::Closed),
        "200 header lines gave {result:?}"
    );
    assert_serving(server.local_addr());
}

#[test]
fn garbage_bytes_get_400_or_close_and_the_server_keeps_serving() {
    let server = start(ServerOptions::default());
    let garbage: [&[u8]; 3] = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\xff\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nBad Header Line\r\n\r\n",
    ];
    for bytes in garbage {
        let mut stream = connect(server.local_addr());
        let _ = stream.write_all(bytes);
        let result = outcome(&mut stream, CLIENT_TIMEOUT);
        assert!(
            matches!(result, Outcome::Status(400) | Outcome::Closed),
            "{bytes:?} gave {result:?}"
        );
    }
    assert_serving(server.local_addr());
}

#[test]
fn request_body_over_the_limit_gets_413() {
    let mut options = ServerOptions::default();
    options.max_body_bytes = 1024;
    let server = start(options);

    // Declared too large: refused without waiting for the body.
    let mut stream = connect(server.local_addr());
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n")
        .expect("send");
    let reply = read_reply(&mut stream, false).expect("reply");
    assert_eq!(reply.status, 413);
    assert_eq!(reply.header("connection"), Some("close"));

    // Chunked, growing past the limit.
    let mut stream = connect(server.local_addr());
    let chunk = format!("400\r\n{}\r\n", "b".repeat(0x400));
    let mut request =
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    request.extend_from_slice(chunk.as_bytes());
    request.extend_from_slice(chunk.as_bytes());
    let _ = stream.write_all(&request);
    let result = outcome(&mut stream, CLIENT_TIMEOUT);
    assert!(
        matches!(result, Outcome::Status(413) | Outcome::Closed),
        "chunked body over the limit gave {result:?}"
    );

    // At the limit: accepted.
    let mut request = b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1024\r\n\
                        Connection: close\r\n\r\n"
        .to_vec();
    request.extend_from_slice(&[b'c'; 1024]);
    assert_eq!(exchange(server.local_addr(), &request).status, 200);
}

#[test]
fn connections_beyond_the_cap_are_refused_and_service_resumes_when_others_close() {
    let cap = 4;
    let mut options = ServerOptions::default();
    options.max_connections = cap;
    options.header_read_timeout = Duration::from_secs(30);
    let server = start(options);
    let addr = server.local_addr();

    // The kernel queues connections in order, so these are accepted before the extra ones.
    let mut held: Vec<TcpStream> = (0..cap).map(|_| connect(addr)).collect();
    for _ in 0..3 {
        let mut extra = connect(addr);
        let result = outcome(&mut extra, CLIENT_TIMEOUT);
        assert!(
            matches!(result, Outcome::Status(503) | Outcome::Closed),
            "a connection beyond the cap gave {result:?}"
        );
    }
    for stream in &mut held {
        assert_eq!(
            outcome(stream, Duration::from_millis(50)),
            Outcome::StillOpen,
            "connections within the cap stay open"
        );
    }

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = connect(addr);
        let _ =
            stream.write_all(b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        match read_reply(&mut stream, false) {
            Ok(reply) if reply.status == 200 => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "service did not resume: {other:?}"
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn probes_beyond_the_cap_are_answered_by_their_route_and_other_requests_refused() {
    let cap = 2;
    let mut options = ServerOptions::default();
    options.max_connections = cap;
    options.header_read_timeout = Duration::from_secs(30);
    let server = start(options);
    let addr = server.local_addr();
    // Connections within the cap, each shown served (answered) before the test goes on.
    let held: Vec<TcpStream> = (0..cap).map(|_| served_connection(addr)).collect();

    for (request, head) in [
        ("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", false),
        ("HEAD /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n", true),
    ] {
        let mut probe = connect(addr);
        probe.write_all(request.as_bytes()).expect("send");
        let reply = read_reply(&mut probe, head).expect("a probe beyond the cap is answered");
        assert_eq!(reply.status, 200, "{request}");
        if !head {
            // The route's own answer (the test routes echo method and path).
            assert_eq!(reply.body, b"GET /healthz ? auth=-", "{request}");
        }
    }
    // Anything else beyond the cap is refused, whether it sends a request or nothing.
    let mut other = connect(addr);
    other
        .write_all(b"GET /healthz?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    assert!(matches!(
        outcome(&mut other, CLIENT_TIMEOUT),
        Outcome::Status(503) | Outcome::Closed
    ));
    let mut silent = connect(addr);
    assert!(matches!(
        outcome(&mut silent, CLIENT_TIMEOUT),
        Outcome::Status(503) | Outcome::Closed
    ));
    drop(held);
}

#[test]
fn a_non_probe_beyond_the_cap_is_refused_no_sooner_than_the_refuse_delay() {
    let mut options = ServerOptions::default();
    options.max_connections = 1;
    options.header_read_timeout = Duration::from_secs(30);
    let server = start(options);
    let addr = server.local_addr();
    let held = served_connection(addr);

    // A client that reconnects as soon as it is refused gets at most one refusal per delay
    // and per probe check: the endpoint does not accept and refuse in a tight loop.
    let sent = Instant::now();
    let mut other = connect(addr);
    other
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let result = outcome(&mut other, CLIENT_TIMEOUT);
    let waited = sent.elapsed();
    assert!(
        matches!(result, Outcome::Status(503) | Outcome::Closed),
        "{result:?}"
    );
    assert!(
        waited >= leakguard::http::REFUSE_DELAY,
        "refused after {waited:?}, before the refuse delay"
    );
    drop(held);
}

#[test]
fn requests_beyond_the_rate_wait_their_turn_and_probes_do_not() {
    let rate = 5;
    let mut options = ServerOptions::default();
    options.max_request_rate = rate;
    let server = start(options);
    let addr = server.local_addr();

    // One keep-alive connection sends three seconds' worth of requests one after the other:
    // the first second's worth (the burst) runs at once, the rest one every 1/rate seconds.
    let requests = 3 * rate;
    let began = Instant::now();
    let mut stream = connect(addr);
    let mut answered = Vec::new();
    for _ in 0..requests {
        stream
            .write_all(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("send");
        let reply = read_reply(&mut stream, false).expect("a paced request is answered");
        assert_eq!(reply.status, 200, "paced requests are not refused");
        answered.push(began.elapsed());
    }
    let spaced = Duration::from_secs(1) / rate * (requests - rate);
    let took = began.elapsed();
    assert!(
        took >= spaced - Duration::from_millis(20),
        "{requests} requests at {rate}/s took {took:?}, less than {spaced:?}: {answered:?}"
    );

    // Ten requests at once use up what the burst has regained and leave the schedule
    // turns ahead: a probe is answered at once while the next request waits its turn.
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            thread::spawn(move || {
                let reply = exchange(
                    addr,
                    b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                );
                assert_eq!(reply.status, 200);
            })
        })
        .collect();
    // Wait until the server has read all ten requests: each of their connections is
    // established with nothing left in flight (the client's send queue and the server's
    // receive queue empty), besides the keep-alive connection above.
    wait_until("the ten requests read by the server", || {
        let (server_side, client_side) = loopback_queues(addr.port());
        server_side.len() >= 11
            && server_side.iter().all(|rx| *rx == 0)
            && client_side.iter().all(|tx| *tx == 0)
    });
    let probing = Instant::now();
    let probe = exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let probe_took = probing.elapsed();
    let queued = Instant::now();
    let paced = exchange(
        addr,
        b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let paced_took = queued.elapsed();
    assert_eq!((probe.status, paced.status), (200, 200));
    assert!(
        paced_took >= Duration::from_millis(600),
        "a request behind ten others ran after {paced_took:?}"
    );
    assert!(
        probe_took < paced_took,
        "the probe ({probe_took:?}) waited like a paced request ({paced_took:?})"
    );
    for waiter in waiters {
        waiter.join().expect("waiting client");
    }
}

#[test]
fn stop_returns_promptly_with_idle_and_slow_clients_and_releases_the_port() {
    let mut options = ServerOptions::default();
    options.header_read_timeout = Duration::from_secs(30);
    options.idle_timeout = Duration::from_secs(30);
    let mut server = start(options);
    let addr = server.local_addr();

    let mut idle = connect(addr);
    idle.write_all(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    assert_eq!(read_reply(&mut idle, false).expect("reply").status, 200);
    let mut slow = connect(addr);
    slow.write_all(b"GET /echo HTTP/1.1\r\nHost:")
        .expect("send");
    assert_eq!(
        outcome(&mut slow, Duration::from_millis(100)),
        Outcome::StillOpen
    );

    let stopping = Instant::now();
    server.stop();
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(3), "stop() took {took:?}");

    wait_for_close(&mut idle, stopping, Duration::from_secs(2));
    wait_for_close(&mut slow, stopping, Duration::from_secs(2));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "nothing listens after stop()"
    );
    std::net::TcpListener::bind(addr).expect("the port can be bound again after stop()");

    server.stop(); // idempotent
    assert_eq!(server.local_addr(), addr);
}

#[test]
fn dropping_the_server_stops_it() {
    let server = start(ServerOptions::default());
    let addr = server.local_addr();
    assert_serving(addr);
    drop(server);
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[test]
fn binding_a_port_in_use_fails_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let error = Server::bind(
        addr.as_str(),
        Arc::new(TestRoutes),
        ServerOptions::default(),
    )
    .expect_err("the port is taken");
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("binding the debug endpoint to {addr}")),
        "{message}"
    );
}

#[test]
fn start_serves_a_listener_bound_by_the_caller() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server =
        Server::start(listener, Arc::new(TestRoutes), ServerOptions::default()).expect("start");
    assert_eq!(server.local_addr(), addr);
    assert_serving(addr);
}

#[test]
fn invalid_options_are_rejected() {
    let mut options = ServerOptions::default();
    options.max_connections = 0;
    let error =
        Server::bind("127.0.0.1:0", Arc::new(TestRoutes), options).expect_err("zero connections");
    assert!(matches!(error, Error::Config { .. }), "{error:?}");
    let mut options = ServerOptions::default();
    options.max_request_rate = 0;
    let error = Server::bind("127.0.0.1:0", Arc::new(TestRoutes), options).expect_err("zero rate");
    assert!(
        error
            .to_string()
            .contains("ServerOptions::max_request_rate"),
        "{error}"
    );
}

#[test]
fn works_when_started_and_stopped_inside_a_tokio_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut server = start(ServerOptions::default());
        // The host's runtime is blocked here, yet the endpoint answers: it has its own.
        assert_serving(server.local_addr());
        server.stop();
    });
}

#[test]
fn a_leakguard_listener_is_ready_for_tokio_and_really_closes_when_dropped() {
    let listener = leakguard::listener("transport-test", "127.0.0.1:0").expect("listener");
    let addr = listener.local_addr().expect("addr");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // `from_std` panics in debug builds on a blocking socket.
        let listener = tokio::net::TcpListener::from_std(listener).expect("from_std");
        let client = std::thread::spawn(move || TcpStream::connect(addr).expect("connect"));
        let (_conn, _) = listener.accept().await.expect("accept");
        drop(client.join().expect("client"));
        // The service closes its listener: nothing keeps it open behind its back, so a new
        // connection is refused instead of waiting in a backlog nobody accepts from.
        drop(listener);
    });
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    assert!(
        refused.is_err(),
        "the closed listener still accepts: {refused:?}"
    );
    assert!(!leakguard::handover_names().contains(&"transport-test".to_owned()));
}

#[test]
fn a_stopped_guard_releases_its_endpoint_port() {
    let guard = leakguard::Guard::builder()
        .ignore_env()
        .addr("127.0.0.1:0")
        .start()
        .expect("start");
    let addr = guard.endpoint_addr().expect("the endpoint runs");
    assert_eq!(get(addr, "/healthz").status, 200);
    guard.stop();
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    assert!(
        refused.is_err(),
        "the port still accepts after stop(): {refused:?}"
    );
    // And a new guard can take the same address.
    let again = leakguard::Guard::builder()
        .ignore_env()
        .addr(&addr.to_string())
        .start()
        .expect("start again");
    assert_eq!(again.endpoint_addr(), Some(addr));
    assert_eq!(get(addr, "/healthz").status, 200);
}

#[test]
fn while_closing_every_answer_closes_its_keep_alive_connection() {
    let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&closing);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = Server::start_closing_when(
        listener,
        Arc::new(TestRoutes),
        ServerOptions::default(),
        Arc::new(move || flag.load(std::sync::atomic::Ordering::SeqCst)),
    )
    .expect("start the server");
    // Before the drain: a keep-alive connection stays open for the next request.
    let mut stream = served_connection(server.local_addr());
    // The drain begins: the in-flight request on the same connection is answered with
    // `Connection: close`, and the server closes the connection after it.
    closing.store(true, std::sync::atomic::Ordering::SeqCst);
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let reply = read_reply(&mut stream, false).expect("a reply during the drain");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");
    wait_for_close(&mut stream, Instant::now(), CLIENT_TIMEOUT);
    // Probes too.
    let mut probe = connect(server.local_addr());
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let reply = read_reply(&mut probe, false).expect("a probe's reply");
    assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");
    wait_for_close(&mut probe, Instant::now(), CLIENT_TIMEOUT);
    // After it, keep-alive again.
    closing.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut stream = served_connection(server.local_addr());
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let reply = read_reply(&mut stream, false).expect("the connection was kept");
    assert_eq!(reply.header("connection"), None, "{reply:?}");
}
