//! The built-in debug endpoint server (feature `http`).
