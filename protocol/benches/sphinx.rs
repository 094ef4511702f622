//! Criterion benchmarks of the packet format (written next).

fn main() {}
