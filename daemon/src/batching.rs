//! Group text -> batches (pure).
