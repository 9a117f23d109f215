#![allow(dead_code)]
mod batching;

fn main() {}
