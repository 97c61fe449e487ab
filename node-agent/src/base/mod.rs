//! The ground floor: the values every other module shares — time, addresses and the
//! order on them, member status, secrets and injected randomness. Nothing here imports
//! from any other module of the crate (a test, `tests/layers.rs`, checks it).

pub mod address;
pub mod member;
pub mod rng;
pub mod secret;
pub mod time;
