//! Benchmarks of leakguard; see `benches/`.
