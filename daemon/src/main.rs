#![allow(dead_code)]
mod batching;
mod plugins;

fn main() {}
