//! Cluster membership (Akka Cluster semantics): members and their lifecycle, gossip with
//! vector clocks and a seen set, convergence and leader actions, as a pure state machine
//! ([`core::MembershipCore`]) owned by one task ([`actor`]); the messages members send
//! each other ([`messages`]), carried by [`crate::transport`].

pub mod actor;
pub mod core;
pub mod events;
pub mod failure_detector;
pub mod gossip;
pub mod heartbeat;
pub mod member;
pub mod messages;
pub mod reachability;
pub mod report;
pub mod responder;
pub mod sbr;
pub mod vclock;
