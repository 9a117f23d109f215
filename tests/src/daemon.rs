//! Starts a real jobxd binary on a free port with a temporary data dir.
