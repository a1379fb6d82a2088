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
pub mod audit;
pub mod config;
pub mod destination;
pub mod gateway;
pub mod image;
pub mod policy;
pub mod protocol;
pub mod proxy;

use std::path::PathBuf;

use crate::engine::EngineError;

/// The egress proxy or a per-run network could not be made or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// The proxy's binary is not where packbox looked.
    #[error(
        "the egress proxy's program packbox-egress-proxy was not found (looked at {})",
        .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoBinary {
        /// Where packbox looked.
        tried: Vec<PathBuf>,
    },
    /// The proxy's binary could not be read.
    #[error("the egress proxy's program {}: cannot be read", .path.display())]
    Binary {
        /// The binary.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The engine lacks the base image the proxy's image is built on.
    #[error(
        "the egress proxy's image is built on {image}, which the engine at {endpoint} does not have"
    )]
    NoBaseImage {
        /// The base image.
        image: String,
        /// The engine.
        endpoint: String,
    },
    /// A network the settings name does not exist.
    #[error("{setting} = {network}: the engine at {endpoint} has no such network")]
    NoNetwork {
        /// The setting.
        setting: &'static str,
        /// The network.
        network: String,
        /// The engine.
        endpoint: String,
    },
    /// No free subnet for a per-run network.
    #[error("no free /29 for a per-run network in egress.subnets = {range}")]
    NoSubnet {
        /// The range.
        range: String,
    },
    /// The proxy failed.
    #[error("the egress proxy failed: {message}")]
    Proxy {
        /// What happened.
        message: String,
    },
    /// The proxy stopped.
    #[error("the egress proxy stopped")]
    ProxyGone,
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl EgressError {
    /// The next step for the user, where there is an obvious one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            EgressError::NoBinary { .. } => Some(
                "install packbox-egress-proxy beside packbox (cargo builds it with packbox), or set egress.proxy_binary / PACKBOX_EGRESS_PROXY",
            ),
            EgressError::NoBaseImage { .. } => Some(
                "build the images on that engine (`packbox images build`) or copy them (`packbox images copy --to`)",
            ),
            EgressError::NoNetwork { .. } => {
                Some("create the network, or change the egress section of the config file")
            }
            EgressError::NoSubnet { .. } => {
                Some("set egress.subnets to a larger range no other network uses")
            }
            _ => None,
        }
    }
}
