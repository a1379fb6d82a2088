//! The proxy's image: the `packbox-egress-proxy` binary on the Debian base packbox builds its
//! runtime images from, made on the engine that runs the proxy (no registry). packbox runs it
//! by the id its own build returned (recorded in the state folder with what it was built from),
//! never by a tag someone else could have set; a changed binary or base is built again.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::EgressError;
use crate::engine::{BuildSpec, ContainerEngine};

/// The image the proxy's image is built on: the bookworm base of the runtime images (glibc
/// 2.36, as the Debian 12 hosts packbox is built on).
pub const BASE_IMAGE: &str = "packbox/base:bookworm";
/// Where the binary is inside the image.
pub const PROXY_PATH: &str = "/usr/local/bin/packbox-egress-proxy";
/// The binary's file name beside packbox.
const BINARY_NAME: &str = "packbox-egress-proxy";
/// The binary packbox puts in the image, at most.
const MAX_BINARY: u64 = 512 << 20;

/// The proxy binary: the one the settings name, else the one beside the running program (or
/// one folder up, where cargo puts test and bench programs).
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf, EgressError> {
    if let Some(path) = configured {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(EgressError::NoBinary {
                tried: vec![path.to_path_buf()],
            })
        };
    }
    let exe = std::env::current_exe().map_err(|e| EgressError::Binary {
        path: PathBuf::from("(the running program)"),
        source: e,
    })?;
    let mut tried = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(BINARY_NAME);
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate);
    }
    Err(EgressError::NoBinary { tried })
}

/// What the state folder remembers of the last image built: for which engine, base and binary
/// (its path, size and modification time), and the id the build returned.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Built {
    endpoint: String,
    base: String,
    binary: PathBuf,
    size: u64,
    modified_ns: u128,
    image: String,
}

/// The file in the state folder that remembers the image.
const RECORD: &str = "egress-proxy.json";

/// The proxy's image on `engine`: the one this state folder recorded building for the same
/// engine, base image and binary when the engine still has that id, else built now (and
/// recorded). Returns its id.
pub async fn ensure(
    engine: &dyn ContainerEngine,
    binary: &Path,
    state_dir: &Path,
) -> Result<String, EgressError> {
    let base = engine
        .image_id(BASE_IMAGE)
        .await?
        .ok_or_else(|| EgressError::NoBaseImage {
            image: BASE_IMAGE.to_string(),
            endpoint: engine.endpoint().to_string(),
        })?;
    let metadata = std::fs::metadata(binary).map_err(|e| EgressError::Binary {
        path: binary.to_path_buf(),
        source: e,
    })?;
    let wanted = Built {
        endpoint: engine.endpoint().to_string(),
        base: base.clone(),
        binary: binary.to_path_buf(),
        size: metadata.len(),
        modified_ns: metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos()),
        image: String::new(),
    };
    let record = state_dir.join(RECORD);
    let recorded: Option<Built> = std::fs::read(&record)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    if let Some(recorded) = recorded
        && (Built {
            image: String::new(),
            ..recorded
        }) == wanted
        && engine.image_id(&recorded.image).await?.as_deref() == Some(recorded.image.as_str())
    {
        return Ok(recorded.image);
    }
    let bytes = read_binary(binary)?;
    let dockerfile = format!("FROM {base}\nCOPY {BINARY_NAME} {PROXY_PATH}\nUSER 65534:65534\n");
    let context = context(&dockerfile, &bytes).map_err(|e| EgressError::Binary {
        path: binary.to_path_buf(),
        source: e,
    })?;
    drop(bytes);
    let spec = BuildSpec {
        tag: "packbox/egress-proxy:latest".into(),
        context_tar: context,
        dockerfile: "Dockerfile".into(),
        build_args: HashMap::new(),
        labels: HashMap::from([
            ("packbox.managed".to_string(), "true".to_string()),
            ("packbox.kind".to_string(), "egress-proxy".to_string()),
        ]),
        network_mode: "none".into(),
        memory_bytes: None,
        // Its id is recorded and checked before use: the engine's cache may serve it.
        no_cache: false,
    };
    let mut on_line = |line: &str| tracing::debug!(line = line.trim_end(), "egress proxy image");
    let image = engine.build_image(spec, &mut on_line).await?;
    let built = Built { image, ..wanted };
    if let Ok(json) = serde_json::to_vec(&built)
        && let Err(e) = crate::common::state::write_atomically(&record, &json)
    {
        tracing::warn!(
            "recording the egress proxy's image in {}: {e}",
            record.display()
        );
    }
    Ok(built.image)
}

fn read_binary(path: &Path) -> Result<Vec<u8>, EgressError> {
    let fail = |source| EgressError::Binary {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(fail)?;
    let metadata = file.metadata().map_err(fail)?;
    if !metadata.is_file() || metadata.len() > MAX_BINARY {
        return Err(fail(std::io::Error::other(format!(
            "expected a program file of at most {} MiB",
            MAX_BINARY >> 20
        ))));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_BINARY)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    Ok(bytes)
}

/// The build context: the Dockerfile and the binary, with fixed times and owners.
fn context(dockerfile: &str, binary: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes, mode) in [
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        (BINARY_NAME, binary, 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        builder.append_data(&mut header, name, bytes)?;
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_binary_that_is_missing_is_named() {
        let err = find_binary(Some(Path::new("/nonexistent/proxy"))).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/proxy"), "{err}");
    }

    #[test]
    fn the_context_holds_the_dockerfile_and_an_executable_binary() {
        let tar = context("FROM x\n", b"\x7fELF").expect("tar");
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, u32)> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.path().expect("path").display().to_string(),
                    e.header().mode().expect("mode"),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("Dockerfile".to_string(), 0o644),
                (BINARY_NAME.to_string(), 0o755)
            ]
        );
    }
}
