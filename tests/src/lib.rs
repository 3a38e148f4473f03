//! End-to-end tests of leakguard; see `tests/`.
