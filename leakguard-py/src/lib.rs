//! Python bindings of leakguard.
