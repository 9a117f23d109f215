//! Harnesses for the end-to-end tests: a real `jobxd` process and real sshd servers.
pub mod daemon;
pub mod flow;
pub mod sshd;
