//! Shared by the benchmarks.

#![allow(dead_code)] // each benchmark uses a different part

pub const MANAGEMENT_PORT: u16 = 8558;
pub const KEY_HEX: &str = "62656e63682d6b65792d6f662d656e6f7567682d72616e646f6d2d6279746573";

/// The value of environment variable `name`, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
