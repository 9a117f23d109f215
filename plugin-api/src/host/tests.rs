//! Tests of the host and the glue together.
