//! Helpers for leakguard's end-to-end tests: run an example binary as a child process on free
//! ports and talk to it over real HTTP.
#![allow(clippy::unwrap_used)]

pub mod cli;
pub mod pprof;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The path of an example binary of the `leakguard-examples` crate, brought up to date by
/// cargo first (once per test process), so a test never runs a stale demo.
pub fn example_binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    // This test executable lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let release = profile_dir.file_name().is_some_and(|p| p == "release");
    let path = profile_dir.join("examples").join(name);
    let mut built = BUILT.lock().unwrap();
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "leakguard-examples",
            "--example",
            name,
        ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "building example {name} failed");
        built.push(name.to_owned());
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process whose output is collected line by line, killed when dropped.
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// Lines printed on stdout and stderr so far, with the time each was read.
    output: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Running {
    /// Starts `binary` with extra environment variables (the `LEAKGUARD_*` ones of the test
    /// runner's environment are removed first).
    pub fn start(binary: &PathBuf, env: &[(&str, String)]) -> Running {
        let mut cmd = Command::new(binary);
        for (k, _) in std::env::vars() {
            if k.starts_with("LEAKGUARD_") || k.starts_with("DEMO_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for stream in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let sink = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().unwrap().push((Instant::now(), line));
                }
            });
        }
        Running { child, output }
    }

    /// Everything printed so far.
    pub fn text(&self) -> String {
        let lines = self.output.lock().unwrap();
        lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// When a line containing `needle` was first read at or after `since`.
    pub fn line_since(&self, needle: &str, since: Instant) -> Option<Instant> {
        self.output
            .lock()
            .unwrap()
            .iter()
            .find(|(t, l)| *t >= since && l.contains(needle))
            .map(|(t, _)| *t)
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until the output contains `needle`; panics with the output after `timeout`.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the output within {timeout:?}:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit, returning its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(100));
                return status.code();
            }
            assert!(Instant::now() < deadline, "still running:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) and reads the whole answer.
pub fn request(method: &str, addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    request_with(method, addr, path, &[])
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// GETs `path`, panicking on a transport error.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request("GET", addr, path).unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

/// Polls `GET path` until it answers 200 or `timeout` passes.
pub fn wait_until_ok(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(r) = request("GET", addr, path)
            && r.status == 200
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Sends one request with extra headers (`Connection: close`).
pub fn request_with(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// An HTTP/1.1 client that keeps its connection alive between requests, as browsers and
/// service clients do: a request on a reused connection that the server closed before
/// answering is sent again once on a fresh connection (what clients do for idempotent
/// requests); anything else is an error.
#[derive(Debug)]
pub struct KeepAlive {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    /// Requests sent again after the server closed an idle connection.
    pub retries: u64,
    /// Whether such a request is sent again (false: [`KeepAlive::never_retrying`]).
    retry: bool,
}

impl KeepAlive {
    /// A client of `addr` (connects on first use).
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            conn: None,
            retries: 0,
            retry: true,
        }
    }

    /// A client of `addr` that never sends a request again: a request on a reused connection
    /// that the server closed fails with the error it met (the next request connects again).
    pub fn never_retrying(addr: SocketAddr) -> Self {
        Self {
            retry: false,
            ..Self::new(addr)
        }
    }

    /// GET `path`: the status and body.
    pub fn get(&mut self, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let reused = self.conn.is_some();
        match self.try_get(path) {
            Ok(r) => Ok(r),
            Err(e) if self.retry && reused && is_closed(&e) => {
                self.conn = None;
                self.retries += 1;
                self.try_get(path)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    fn try_get(&mut self, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(15)))?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().unwrap();
        write!(
            conn.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.addr
        )?;
        let mut status_line = String::new();
        if conn.read_line(&mut status_line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before an answer",
            ));
        }
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut line = String::new();
            if conn.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed in the headers",
                ));
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "content-length" {
                    length = v.trim().parse().unwrap_or(0);
                } else if k == "connection" && v.trim().eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body)?;
        if close {
            self.conn = None;
        }
        Ok((status, body))
    }
}

fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionAborted
    )
}

impl Running {
    /// Waits for the process to end; its exit code, or the signal that ended it.
    pub fn wait_status(&mut self, timeout: Duration) -> (Option<i32>, Option<i32>) {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (status.code(), status.signal());
            }
            assert!(Instant::now() < deadline, "still running:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// The `leaky_service` example (the README's demo) as a child process: its service and its
/// leakguard endpoint on free loopback ports, sampling every 100 ms.
#[derive(Debug)]
pub struct Demo {
    /// The child process.
    pub run: Running,
    /// The demo's own HTTP service.
    pub service: SocketAddr,
    /// leakguard's endpoint.
    pub endpoint: SocketAddr,
}

impl Demo {
    /// Starts the demo with `env` added to its environment (an entry given twice: the last
    /// one counts) and returns at once, without waiting for it to answer.
    pub fn spawn(env: &[(&str, &str)]) -> Demo {
        let service: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let endpoint: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut all = vec![
            ("DEMO_ADDR", service.to_string()),
            ("LEAKGUARD_ADDR", endpoint.to_string()),
            ("LEAKGUARD_INTERVAL", "100ms".to_owned()),
        ];
        all.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let run = Running::start(&example_binary("leaky_service"), &all);
        Demo {
            run,
            service,
            endpoint,
        }
    }

    /// Starts the demo as [`Demo::spawn`] does and waits until both its endpoint's
    /// `/healthz` and its service answer 200 (panicking with its output if they never do).
    pub fn start(env: &[(&str, &str)]) -> Demo {
        let demo = Demo::spawn(env);
        assert!(
            wait_until_ok(demo.endpoint, "/healthz", Duration::from_secs(60)),
            "{}",
            demo.run.text()
        );
        assert!(
            wait_until_ok(demo.service, "/", Duration::from_secs(10)),
            "{}",
            demo.run.text()
        );
        demo
    }

    /// The endpoint's JSON report, `/debug/leakguard`.
    pub fn report(&self) -> serde_json::Value {
        get(self.endpoint, "/debug/leakguard").json()
    }
}
