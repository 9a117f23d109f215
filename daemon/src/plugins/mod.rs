//! Executor plugin host.
