//! Async channel tests (feature `tokio`).
