//! Local networks through bollard: the per-run bridges of egress grants (created with a subnet
//! of packbox's, internal, and without an address for the host), connecting packbox's proxy to
//! them, and finding and removing them.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{
    EndpointIpamConfig, EndpointSettings, Ipam, IpamConfig, NetworkConnectRequest,
    NetworkCreateRequest, NetworkDisconnectRequest,
};
use bollard::query_parameters::{InspectContainerOptions, ListNetworksOptionsBuilder};

use super::docker::{api, is_status};
use super::{BridgeSpec, EngineError, NetworkSummary};

/// The bridge driver's option that keeps the host off the network: no address, no route.
const NO_HOST_ADDRESS: &str = "com.docker.network.bridge.inhibit_ipv4";

pub(super) async fn create_bridge(
    docker: &Docker,
    spec: &BridgeSpec,
) -> Result<String, EngineError> {
    let mut options = HashMap::new();
    if !spec.host_address {
        options.insert(NO_HOST_ADDRESS.to_string(), "true".to_string());
    }
    let request = NetworkCreateRequest {
        name: spec.name.clone(),
        driver: Some("bridge".into()),
        internal: Some(spec.internal),
        attachable: Some(false),
        ipam: spec.subnet.as_ref().map(|subnet| Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.clone()),
                ..Default::default()
            }]),
            options: None,
        }),
        options: Some(options),
        labels: Some(spec.labels.clone().into_iter().collect()),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(created) => Ok(created.id),
        Err(e) if is_status(&e, 409) || e.to_string().contains("overlaps") => {
            Err(EngineError::InUse {
                what: format!(
                    "creating network {} (its name, or its subnet {})",
                    spec.name,
                    spec.subnet.as_deref().unwrap_or("chosen by the engine")
                ),
            })
        }
        Err(e) => Err(api(format!("creating network {}", spec.name), e)),
    }
}

pub(super) async fn network(
    docker: &Docker,
    name: &str,
) -> Result<Option<NetworkSummary>, EngineError> {
    match docker.inspect_network(name, None).await {
        Ok(found) => Ok(Some(summary(
            found.id,
            found.name,
            found.driver,
            found.labels,
            found.ipam,
            found.internal,
        ))),
        Err(e) if is_status(&e, 404) => Ok(None),
        Err(e) => Err(api(format!("inspecting network {name}"), e)),
    }
}

pub(super) async fn networks_with_labels(
    docker: &Docker,
    labels: &[String],
) -> Result<Vec<NetworkSummary>, EngineError> {
    // Local networks only, chosen here rather than by a `scope` filter: Podman's compat API
    // refuses that filter (500 "invalid filter").
    let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
    let options = ListNetworksOptionsBuilder::default()
        .filters(&filters)
        .build();
    let found = docker
        .list_networks(Some(options))
        .await
        .map_err(|e| api("listing networks", e))?;
    Ok(found
        .into_iter()
        .filter(|n| n.scope.as_deref() == Some("local"))
        .map(|n| summary(n.id, n.name, n.driver, n.labels, n.ipam, n.internal))
        .collect())
}

fn summary(
    id: Option<String>,
    name: Option<String>,
    driver: Option<String>,
    labels: Option<HashMap<String, String>>,
    ipam: Option<Ipam>,
    internal: Option<bool>,
) -> NetworkSummary {
    let configs = ipam.and_then(|i| i.config).unwrap_or_default();
    NetworkSummary {
        id: id.unwrap_or_default(),
        name: name.unwrap_or_default(),
        driver: driver.unwrap_or_default(),
        labels: labels.unwrap_or_default(),
        subnets: configs.iter().filter_map(|c| c.subnet.clone()).collect(),
        gateways: configs.iter().filter_map(|c| c.gateway.clone()).collect(),
        internal: internal.unwrap_or(false),
    }
}

pub(super) async fn connect(
    docker: &Docker,
    network: &str,
    container: &str,
    ipv4: Option<&str>,
) -> Result<(), EngineError> {
    let request = NetworkConnectRequest {
        container: container.to_string(),
        endpoint_config: Some(EndpointSettings {
            ipam_config: ipv4.map(|address| EndpointIpamConfig {
                ipv4_address: Some(address.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    docker.connect_network(network, request).await.map_err(|e| {
        api(
            format!("connecting container {container} to network {network}"),
            e,
        )
    })
}

pub(super) async fn disconnect(
    docker: &Docker,
    network: &str,
    container: &str,
) -> Result<(), EngineError> {
    let request = NetworkDisconnectRequest {
        container: container.to_string(),
        force: Some(true),
    };
    match docker.disconnect_network(network, request).await {
        Ok(()) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(api(
            format!("disconnecting container {container} from network {network}"),
            e,
        )),
    }
}

pub(super) async fn remove(docker: &Docker, id: &str) -> Result<(), EngineError> {
    match docker.remove_network(id).await {
        Ok(()) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) if is_status(&e, 403) || e.to_string().contains("active endpoints") => {
            Err(EngineError::InUse {
                what: format!("removing network {id}"),
            })
        }
        Err(e) => Err(api(format!("removing network {id}"), e)),
    }
}

pub(super) async fn container_address(
    docker: &Docker,
    container: &str,
    network: &str,
) -> Result<Option<String>, EngineError> {
    let inspected = match docker
        .inspect_container(container, None::<InspectContainerOptions>)
        .await
    {
        Ok(inspected) => inspected,
        Err(e) if is_status(&e, 404) => return Ok(None),
        Err(e) => return Err(api(format!("inspecting container {container}"), e)),
    };
    let networks = inspected
        .network_settings
        .and_then(|s| s.networks)
        .unwrap_or_default();
    Ok(networks
        .iter()
        .find(|(name, endpoint)| {
            name.as_str() == network || endpoint.network_id.as_deref() == Some(network)
        })
        .and_then(|(_, endpoint)| endpoint.ip_address.clone())
        .filter(|address| !address.is_empty()))
}
