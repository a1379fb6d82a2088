//! Least-privilege network for actions: per-action egress grants, enforced outside the action's
//! container by a proxy packbox owns.
//!
//! - [`destination`]: `host:port` destinations as grants and declared needs name them, and hosts
//!   as requests name them (one canonical spelling).
//! - [`address`]: addresses no grant reaches (loopback, link-local, metadata, the host's).
//! - [`protocol`]: what packbox and the proxy say to each other (grants in, audit lines out).
//! - [`proxy`]: the proxy itself, run as the `packbox-egress-proxy` binary in its own locked-down
//!   container.

pub mod address;
pub mod destination;
pub mod protocol;
pub mod proxy;
pub mod config;
pub mod policy;
