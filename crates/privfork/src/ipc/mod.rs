//! Typed IPC over socketpairs, with fd passing.
