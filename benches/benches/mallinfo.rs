//! glibc `mallinfo2` on a fragmented heap: how long one call takes, the `malloc` latency
//! another thread sees meanwhile, and how often the guard's sampler reads it there.
//!
//! `mallinfo2` walks every free chunk of every arena, each arena under its lock, so a thread
//! allocating from an arena waits while that arena is walked. The heap is built with glibc's
//! `malloc`/`free` called directly (this binary's Rust allocations go to jemalloc, its global
//! allocator, and do not disturb it): four threads, each in an arena of its own, allocate
//! chunks of 16 to 256 bytes and free every other one, so that no two free chunks merge; the
//! heap grows in steps to 10^4, 10^5 and 10^6 free chunks.
//!
//! At each step:
//! - `mallinfo2`'s duration, median and maximum of 21 calls;
//! - the latency of `malloc(4096)` + `free` (sizes past the thread cache: each takes the
//!   arena's lock) on one of the fragmented arenas, in windows of 200 ms alternating between
//!   quiet and `mallinfo2` called back to back by another thread: p99 and maximum of each;
//! - the cadence the sampler chooses there (a `leakguard::sample::Sampler` with the glibc
//!   backend, from what a reading cost), and the pause per second it amounts to.
//!
//! Target: the amortized pause, `mallinfo2`'s median over the sampler's cadence, stays at or
//! under 1 ms per second at every step; the bench exits with an error otherwise.
//!
//! `cargo bench -p leakguard-benches --bench mallinfo` (~1 min). Without `--bench` (as
//! `cargo test --benches` runs it) one short round at 10^4 free chunks only.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use leakguard::ManualClock;
use leakguard::allocator::AllocatorChoice;
use leakguard::sample::Sampler;

#[global_allocator]
static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;

/// Threads (arenas) the free chunks are spread over.
const ARENAS: usize = 4;
/// Windows per step, half quiet and half with `mallinfo2` running.
const WINDOWS: usize = 10;
const WINDOW: Duration = Duration::from_millis(200);
/// Amortized pause allowed, seconds per second.
const TARGET: f64 = 1e-3;

fn mallinfo2() -> Duration {
    let t0 = Instant::now();
    // SAFETY: glibc's mallinfo2 takes no arguments and only reads the allocator's state.
    let info = unsafe { libc::mallinfo2() };
    std::hint::black_box(info);
    t0.elapsed()
}

fn free_chunks() -> usize {
    // SAFETY: as above.
    let info = unsafe { libc::mallinfo2() };
    info.ordblks + info.smblks
}

enum Command {
    /// Hold this many more chunks (allocate twice as many, free every other one).
    Grow(usize, mpsc::Sender<()>),
    /// Measure malloc(4096)+free latencies until told to stop; send them back.
    Probe(
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        mpsc::Sender<Latencies>,
    ),
}

/// The latencies of one probe window: those of 1 µs or more, and how many there were in all.
#[derive(Default)]
struct Latencies {
    slow: Vec<u64>,
    total: u64,
}

impl Latencies {
    fn extend(&mut self, other: Latencies) {
        self.slow.extend(other.slow);
        self.total += other.total;
    }

    /// The `q` quantile, µs ("< 1" when it is under 1 µs).
    fn quantile(&mut self, q: f64) -> String {
        self.slow.sort_unstable();
        let fast = self.total - self.slow.len() as u64;
        let rank = ((self.total as f64 * q).ceil() as u64).max(1);
        if rank <= fast || self.slow.is_empty() {
            return "< 1".into();
        }
        let i = ((rank - fast - 1) as usize).min(self.slow.len() - 1);
        format!("{:.0}", self.slow[i] as f64 / 1e3)
    }
}

/// A thread with an arena of its own, which fragments it on command.
fn arena_thread(rx: mpsc::Receiver<Command>) {
    let mut kept: Vec<usize> = Vec::new();
    let mut n = 0usize;
    for cmd in rx {
        match cmd {
            Command::Grow(more, done) => {
                // All first, then every other one freed: a freed chunk is not reused by the
                // next allocation, and no two freed chunks are neighbours.
                let fresh: Vec<usize> = (0..2 * more)
                    .map(|_| {
                        let size = 16 + (n * 37) % 241;
                        n += 1;
                        // SAFETY: plain glibc malloc.
                        let p = unsafe { libc::malloc(size) };
                        assert!(!p.is_null());
                        p as usize
                    })
                    .collect();
                for (i, p) in fresh.into_iter().enumerate() {
                    if i % 2 == 0 {
                        kept.push(p);
                    } else {
                        // SAFETY: allocated above by glibc malloc, freed once.
                        unsafe { libc::free(p as *mut libc::c_void) };
                    }
                }
                let _ = done.send(());
            }
            Command::Probe(stop, out) => {
                // Only latencies of 1 µs or more are kept (a few), with the count of all.
                let mut slow = Vec::with_capacity(1 << 16);
                let mut total = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t0 = Instant::now();
                    // SAFETY: as above.
                    unsafe {
                        let p = libc::malloc(4096);
                        std::hint::black_box(p);
                        libc::free(p);
                    }
                    let ns = t0.elapsed().as_nanos() as u64;
                    total += 1;
                    if ns >= 1_000 && slow.len() < slow.capacity() {
                        slow.push(ns);
                    }
                }
                let _ = out.send(Latencies { slow, total });
            }
        }
    }
    for p in kept {
        // SAFETY: allocated above by glibc malloc, freed once.
        unsafe { libc::free(p as *mut libc::c_void) };
    }
}

fn quantile(v: &mut [u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let steps: &[usize] = if full {
        &[10_000, 100_000, 1_000_000]
    } else {
        &[10_000]
    };
    let windows = if full { WINDOWS } else { 2 };
    let arenas: Vec<mpsc::Sender<Command>> = (0..ARENAS)
        .map(|_| {
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || arena_thread(rx));
            tx
        })
        .collect();
    let mut held = 0usize;
    let mut failed = false;
    println!(
        "| free chunks | mallinfo2 median / max (ms) | malloc p99 quiet / during (µs) | malloc max quiet / during (µs) | sampler cadence (s) | pause per second (µs) |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for &target in steps {
        let more = (target - held) / ARENAS;
        let (done_tx, done_rx) = mpsc::channel();
        for a in &arenas {
            a.send(Command::Grow(more, done_tx.clone()))
                .expect("arena thread");
        }
        for _ in 0..ARENAS {
            done_rx.recv().expect("grown");
        }
        held = target;
        let chunks = free_chunks();

        let mut calls: Vec<u64> = (0..21).map(|_| mallinfo2().as_nanos() as u64).collect();
        let median = quantile(&mut calls, 0.5);
        let max = quantile(&mut calls, 1.0);

        // Alternating windows, quiet first, on the first arena's thread.
        let (mut quiet, mut during) = (Latencies::default(), Latencies::default());
        for w in 0..windows {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (out_tx, out_rx) = mpsc::channel();
            arenas[0]
                .send(Command::Probe(stop.clone(), out_tx))
                .expect("arena thread");
            let end = Instant::now() + WINDOW;
            if w % 2 == 1 {
                while Instant::now() < end {
                    mallinfo2();
                }
            } else {
                thread::sleep(WINDOW);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let lat = out_rx.recv().expect("latencies");
            if w % 2 == 1 {
                during.extend(lat);
            } else {
                quiet.extend(lat);
            }
        }

        // The cadence the guard's sampler chooses on this heap: from a first reading, then
        // one more (the cadence may at most double from one reading to the next).
        let clock = ManualClock::new(0.0);
        let mut sampler = Sampler::new(AllocatorChoice::Glibc);
        let mut every = Duration::ZERO;
        for _ in 0..8 {
            sampler.sample(&clock);
            every = sampler.allocator_every();
            clock.advance(every);
        }
        let amortized = median as f64 / 1e9 / every.as_secs_f64().max(1e-9);
        failed |= amortized > TARGET;
        println!(
            "| {chunks} | {:.2} / {:.2} | {} / {} | {} / {} | {:.1} | {:.1} |",
            median as f64 / 1e6,
            max as f64 / 1e6,
            quiet.quantile(0.99),
            during.quantile(0.99),
            quiet.quantile(1.0),
            during.quantile(1.0),
            every.as_secs_f64(),
            amortized * 1e6,
        );
    }
    drop(arenas);
    if failed {
        eprintln!(
            "miss: the sampler's mallinfo2 readings pause the heap more than {} µs per second",
            TARGET * 1e6
        );
        std::process::exit(1);
    }
}
