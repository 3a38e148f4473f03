//! The guard's tests that share a process safely: each starts guards of its own and asserts
//! nothing process-wide. Kept apart in binaries of their own: `guard_thread.rs` (counts the
//! sampler threads of the process), `guard_thresholds.rs` (measures the process's resident
//! memory), `guard_metrics_facade.rs` (installs the process's metrics recorder). One binary
//! instead of seven, so the crate is linked once for them.

mod clock_jump;
mod content;
mod exposure;
mod extend;
mod faults;
mod fixture;
mod leak;
mod ui;
