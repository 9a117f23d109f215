//! Starts real OpenSSH servers for the ssh executor tests.
