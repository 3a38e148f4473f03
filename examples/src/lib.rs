//! Runnable examples of leakguard; see `examples/`.
