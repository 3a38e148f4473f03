//! Raw bytes sent to the real debug endpoint server over loopback TCP (hyper under
//! leakguard's limits): the server answers or closes, never panics, and keeps serving.
#![no_main]

use leakguard::http::{Server, ServerOptions};
use leakguard::{Guard, RestartAction};
use libfuzzer_sys::fuzz_target;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

struct Target {
    _guard: Guard,
    _server: Server,
    addr: SocketAddr,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let guard = Guard::builder()
            .no_endpoint()
            .ignore_env()
            .background(false)
            .record_metrics(false)
            .limit(1 << 40)
            .token("fuzz-token-0123456789")
            .restart_action(RestartAction::None)
            .start()
            .expect("the guard starts");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let mut options = ServerOptions::default();
        options.header_read_timeout = Duration::from_millis(500);
        options.idle_timeout = Duration::from_millis(500);
        let server = Server::start(listener, guard.routes(), options).expect("the server starts");
        let addr = server.local_addr();
        Target {
            _guard: guard,
            _server: server,
            addr,
        }
    })
}

fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("the server accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // The server may close early (a bad request): later writes may fail, which is fine.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

fuzz_target!(|data: &[u8]| {
    let t = target();
    let answer = exchange(t.addr, data);
    if !answer.is_empty() {
        assert!(
            answer.starts_with(b"HTTP/1."),
            "not an HTTP answer: {answer:?}"
        );
    }
});
