//! A small blocking HTTP/1.1 client for the guard's endpoint: `http://` URLs only, one GET
//! per connection (`Connection: close`), with connect, read and write timeouts and a cap on
//! the answer's size.

use super::CliError;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The report's path on the endpoint.
pub(crate) const REPORT_PATH: &str = "/debug/leakguard";
/// Largest answer accepted.
const MAX_ANSWER: u64 = 32 << 20;

/// Where the guard's report is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// Host as written (`127.0.0.1`, `[::1]`, `localhost`).
    host: String,
    /// Port.
    port: u16,
    /// Path of the report, with any query.
    path: String,
}

impl Endpoint {
    /// Parses `http://HOST[:PORT][/PATH]`, or `HOST:PORT` (the form of `LEAKGUARD_ADDR`).
    /// The report's path `/debug/leakguard` is appended to PATH unless PATH already holds it.
    pub(crate) fn parse(url: &str) -> Result<Self, CliError> {
        let (host, port, path, query) = split_url(url)?;
        let path = match path.find(REPORT_PATH) {
            Some(i) => path[..i + REPORT_PATH.len()].to_owned(),
            None => format!("{}{REPORT_PATH}", path.trim_end_matches('/')),
        };
        Ok(Self {
            host,
            port,
            path: path + &query,
        })
    }

    /// Parses a server's base URL, `http://HOST[:PORT][/PREFIX]` or `HOST:PORT`: PREFIX (a
    /// server behind a path prefix, such as Prometheus' `--web.route-prefix`) is kept, without
    /// its trailing slash, and the paths given to [`Endpoint::get_path`] are appended to it.
    /// A query in the URL is refused: the caller builds its own.
    pub(crate) fn parse_base(url: &str) -> Result<Self, CliError> {
        let (host, port, path, query) = split_url(url)?;
        if !query.is_empty() {
            return Err(CliError::usage(format!(
                "{}: a query string in the server's URL is not supported: give the server's base URL, e.g. http://prometheus:9090",
                url.trim()
            )));
        }
        Ok(Self {
            host,
            port,
            path: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The report's URL, for display.
    pub(crate) fn url(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.path)
    }

    /// The endpoint's base URL (without the report's path), for display.
    pub(crate) fn base(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// GETs the report and parses it as JSON. The bearer token `LEAKGUARD_TOKEN` is sent when
    /// set.
    pub(crate) fn fetch_report(&self, timeout: Duration) -> Result<serde_json::Value, CliError> {
        let token = std::env::var("LEAKGUARD_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        if token
            .as_deref()
            .is_some_and(|t| t.chars().any(|c| c.is_control()))
        {
            return Err(CliError::usage(
                "LEAKGUARD_TOKEN holds a control character (a newline?)",
            ));
        }
        let (status, body) = self.get(&self.path, token.as_deref(), timeout, MAX_ANSWER)?;
        let url = self.url();
        match status {
            200 => {}
            401 | 403 => {
                return Err(CliError::io(format!(
                    "{url} answered {status}: {}",
                    if token.is_some() {
                        "the guard refused LEAKGUARD_TOKEN"
                    } else {
                        "the guard wants a token: set LEAKGUARD_TOKEN"
                    }
                )));
            }
            404 => {
                return Err(CliError::io(format!(
                    "{url} answered 404: no leakguard report there (is this a leakguard endpoint, and is the path right?)"
                )));
            }
            _ => {
                return Err(CliError::io(format!(
                    "{url} answered {status}: {}",
                    first_line(&body)
                )));
            }
        }
        serde_json::from_slice(&body).map_err(|e| {
            CliError::io(format!(
                "{url} answered something that is not a JSON report ({e}): {}",
                first_line(&body)
            ))
        })
    }

    /// GETs `path_and_query` (appended to the base URL's path, see [`Endpoint::parse_base`]):
    /// the status and the body, which may be at most `max_answer` bytes. Errors name the URL
    /// without its query.
    pub(crate) fn get_path(
        &self,
        path_and_query: &str,
        timeout: Duration,
        max_answer: u64,
    ) -> Result<(u16, Vec<u8>), CliError> {
        self.get(
            &format!("{}{path_and_query}", self.path),
            None,
            timeout,
            max_answer,
        )
    }

    /// One GET of `path`: the status and the body.
    fn get(
        &self,
        path: &str,
        token: Option<&str>,
        timeout: Duration,
        max_answer: u64,
    ) -> Result<(u16, Vec<u8>), CliError> {
        let url = format!(
            "{}{}",
            self.base(),
            path.split_once('?').map_or(path, |(p, _)| p)
        );
        let fail = |what: &str, e: std::io::Error| CliError::io(format!("{url}: {what}: {e}"));
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<_> = (host, self.port)
            .to_socket_addrs()
            .map_err(|e| fail("cannot resolve the host", e))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(mut stream) = stream else {
            return Err(fail(
                "cannot connect",
                last.unwrap_or_else(|| std::io::Error::other("no address")),
            ));
        };
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| fail("cannot set timeouts", e))?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: leakguard-cli/{}\r\nAccept: application/json\r\n{auth}Connection: close\r\n\r\n",
            self.host,
            self.port,
            env!("CARGO_PKG_VERSION")
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| fail("cannot send the request", e))?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(max_answer.saturating_add(1))
            .read_to_end(&mut raw)
            .map_err(|e| fail("cannot read the answer", e))?;
        if raw.len() as u64 > max_answer {
            return Err(CliError::io(format!(
                "{url}: the answer is larger than {}",
                crate::format_bytes(max_answer)
            )));
        }
        parse_response(&raw).map_err(|why| CliError::io(format!("{url}: {why}")))
    }
}

/// Splits `http://HOST[:PORT][/PATH][?QUERY]` (or `HOST:PORT...`) into host, port (80 unless
/// given), path and query (with its `?`, or empty); a fragment is dropped.
fn split_url(url: &str) -> Result<(String, u16, String, String), CliError> {
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(CliError::usage(format!(
                "{url}: https is not supported: leakguard speaks plain HTTP (use http://, through an SSH tunnel or `kubectl port-forward` when the server is remote)"
            )));
        }
        Some((scheme, _)) => {
            return Err(CliError::usage(format!(
                "{url}: unsupported scheme {scheme:?}: give an http:// URL such as http://127.0.0.1:6464"
            )));
        }
        None => url,
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    if authority.contains('@') {
        return Err(CliError::usage(format!(
            "{url}: credentials in the URL are not supported: set LEAKGUARD_TOKEN instead"
        )));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((h, after)) = v6.split_once(']') else {
            return Err(CliError::usage(format!("{url}: unclosed [ in the address")));
        };
        (format!("[{h}]"), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    let host = if host.is_empty() {
        "127.0.0.1".to_owned()
    } else {
        host
    };
    let port = match port {
        None | Some("") => 80,
        Some(p) => p.parse::<u16>().map_err(|_| {
            CliError::usage(format!(
                "{url}: bad port {p:?}: expected a number up to 65535"
            ))
        })?,
    };
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CliError::usage(format!("{url}: bad host {host:?}")));
    }
    // Drop a fragment; keep a query.
    let tail = tail.split('#').next().unwrap_or("");
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, format!("?{q}")),
        None => (tail, String::new()),
    };
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CliError::usage(format!("{url}: bad path {path:?}")));
    }
    Ok((host, port, path.to_owned(), query))
}

/// Splits a raw HTTP/1.1 answer into its status and body (de-chunked, cut to Content-Length).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            if raw.is_empty() {
                "the connection closed without an answer".to_owned()
            } else {
                "not an HTTP answer (no end of headers)".to_owned()
            }
        })?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    if !status_line.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP answer: {status_line:?}"));
    }
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            } else if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<usize>().ok();
            }
        }
    }
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body)?
    } else if let Some(n) = length {
        if body.len() < n {
            return Err(format!(
                "the answer was cut short ({} of {n} bytes)",
                body.len()
            ));
        }
        body[..n].to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunked answer was cut short")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err("a chunked answer was cut short".into());
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// The first non-blank line of an answer's body, cut to 200 characters, for messages.
pub(crate) fn first_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let cut: String = line.chars().take(200).collect();
    if cut.is_empty() {
        "(empty body)".into()
    } else {
        cut
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_and_without_paths() {
        for (url, want) in [
            (
                "http://127.0.0.1:6464",
                "http://127.0.0.1:6464/debug/leakguard",
            ),
            (
                "http://127.0.0.1:6464/",
                "http://127.0.0.1:6464/debug/leakguard",
            ),
            (
                "http://127.0.0.1:6464/debug/leakguard",
                "http://127.0.0.1:6464/debug/leakguard",
            ),
            (
                "http://127.0.0.1:6464/debug/leakguard/ui",
                "http://127.0.0.1:6464/debug/leakguard",
            ),
            (
                "HTTP://host/prefix/",
                "http://host:80/prefix/debug/leakguard",
            ),
            ("127.0.0.1:6464", "http://127.0.0.1:6464/debug/leakguard"),
            ("http://[::1]:6464", "http://[::1]:6464/debug/leakguard"),
        ] {
            assert_eq!(Endpoint::parse(url).unwrap().url(), want, "{url}");
        }
        for bad in [
            "https://127.0.0.1:6464",
            "ftp://x",
            "http://127.0.0.1:99999",
            "http://user:pw@host:1",
        ] {
            assert_eq!(Endpoint::parse(bad).unwrap_err().code, 2, "{bad}");
        }
    }

    #[test]
    fn base_urls_keep_their_prefix_and_answers_are_capped() {
        let e = Endpoint::parse_base("http://127.0.0.1:9090/").unwrap();
        assert_eq!(e.url(), "http://127.0.0.1:9090");
        let e = Endpoint::parse_base("prom:9090/prometheus/").unwrap();
        assert_eq!(e.url(), "http://prom:9090/prometheus");
        assert_eq!(
            Endpoint::parse_base("http://p:9090/?x=1").unwrap_err().code,
            2
        );
        // A server that answers 20 bytes of body: within a cap of 100 bytes, over one of 10.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut paths = Vec::new();
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap();
                    head.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8(head).unwrap();
                paths.push(head.split(' ').nth(1).unwrap().to_owned());
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n01234567890123456789")
                    .unwrap();
            }
            paths
        });
        let e = Endpoint::parse_base(&format!("http://{addr}/prefix")).unwrap();
        let t = Duration::from_secs(10);
        let (status, body) = e.get_path("/api/v1/query_range?query=up", t, 100).unwrap();
        assert_eq!((status, body.len()), (200, 20));
        let err = e
            .get_path("/api/v1/query_range?query=up", t, 10)
            .unwrap_err();
        assert!(
            err.message
                .ends_with("/prefix/api/v1/query_range: the answer is larger than 10 B"),
            "{}",
            err.message
        );
        assert_eq!(
            server.join().unwrap(),
            [
                "/prefix/api/v1/query_range?query=up",
                "/prefix/api/v1/query_range?query=up"
            ]
        );
    }

    #[test]
    fn answers_plain_sized_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra";
        assert_eq!(parse_response(plain).unwrap(), (200, b"{}".to_vec()));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (404, b"abcde".to_vec()));
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }
}
