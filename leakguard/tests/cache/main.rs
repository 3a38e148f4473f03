//! The cache's tests that share a process safely: instances of their own, no global count
//! asserted. (`cache_registry.rs` stays a binary of its own: the registry is process-wide.)
//! One binary instead of four, so the crate is linked once for them.

mod concurrency;
mod expiry;
mod listener;
mod model;
