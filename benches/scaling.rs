//! Two-thread scaling of authenticate + one limit check (filled in by the next commit).
fn main() {}
