//! What an environment image is made of: the pack's dependency manifests, the generated
//! Dockerfile, and the key that names the result. Pure code: no engine, no files but the pack's.

use sha2::{Digest, Sha256};

use crate::pack::dependencies::{Installer, Manifests};

/// Bumped whenever the generated install changes meaning, so old images are not reused.
pub const RECIPE_FORMAT: u32 = 3;
/// The repository all environment images are tagged in.
pub const ENV_REPOSITORY: &str = "packbox/env";
/// Where the dependencies live inside an environment image.
const ENV_ROOT: &str = "/opt/packbox";
/// The folder of pip's inputs, in the build context and under [`ENV_ROOT`]: the merged
/// requirements file, what it includes and the local artifacts it names, at their places in the
/// pack, so that pip (run there) finds them as it would in the pack.
const PIP_INPUTS: &str = "req";
/// Name of the CA bundle under [`ENV_ROOT`] while the build runs (removed after the install).
const CA_FILE: &str = "build-ca.pem";

/// Where an environment image records what was resolved: pip's freeze, npm's lock.
pub fn lock_file(installer: Installer) -> &'static str {
    match installer {
        Installer::Pip => "/opt/packbox/pip-freeze.txt",
        Installer::Npm => "/opt/packbox/node/package-lock.json",
        Installer::Go => super::golang::BUILD_INFO,
    }
}

/// Settings that change what an install fetches: part of the key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexSettings {
    /// The pip index builds install from (`PIP_INDEX_URL`); `None`: pip's default.
    pub pip_index_url: Option<String>,
    /// The npm registry builds install from; `None`: npm's default.
    pub npm_registry: Option<String>,
}

/// Everything one environment image is built from.
#[derive(Clone, Debug)]
pub struct EnvRecipe {
    /// The catalog's name for the runtime.
    pub runtime: String,
    /// The detected full version of the runtime (`3.11.2`).
    pub version: String,
    /// The id of the runtime image the environment is built on.
    pub base_image_id: String,
    /// The pack's dependency manifests and what they declare.
    pub manifests: Manifests,
    /// Where packages are fetched from; a different index is a different environment.
    pub index: IndexSettings,
}

impl EnvRecipe {
    /// The shell script the build container runs, as the action's user, with the pack's
    /// manifests under [`ENV_ROOT`] (see [`EnvRecipe::staging_tar`]). The installer's
    /// environment (index, proxies) comes on stdin, one `NAME=value` a line, and reaches the
    /// installer alone: not the container's configuration (which the committed image would
    /// inherit), not the steps after it. The CA bundle, when staged, is trusted by the
    /// installer, then removed.
    pub fn install_script(&self) -> String {
        let ca = format!("{ENV_ROOT}/{CA_FILE}");
        let installer_env =
            "while IFS= read -r line; do case \"$line\" in *=*) export \"$line\";; esac; done";
        match self.manifests.installer {
            Installer::Pip => format!(
                "set -eu\n\
                 export HOME=/tmp\n\
                 if [ -f {ca} ]; then export PIP_CERT={ca} CURL_CA_BUNDLE={ca} SSL_CERT_FILE={ca} REQUESTS_CA_BUNDLE={ca}; fi\n\
                 cd {ENV_ROOT}/{PIP_INPUTS}\n\
                 python3 -m venv {ENV_ROOT}/venv\n\
                 ( {installer_env}; exec {ENV_ROOT}/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-input -r requirements.txt )\n\
                 rm -f {ca}\n\
                 {ENV_ROOT}/venv/bin/python -m compileall -q {ENV_ROOT}/venv >/dev/null\n\
                 {ENV_ROOT}/venv/bin/pip freeze --disable-pip-version-check > {ENV_ROOT}/pip-freeze.txt\n"
            ),
            Installer::Npm => {
                let install = if self.manifests.has_file("package-lock.json") {
                    "ci"
                } else {
                    "install"
                };
                format!(
                    "set -eu\n\
                     export HOME=/tmp NPM_CONFIG_CACHE=/tmp/npm-cache\n\
                     if [ -f {ca} ]; then export NPM_CONFIG_CAFILE={ca} CURL_CA_BUNDLE={ca} SSL_CERT_FILE={ca}; fi\n\
                     cd {ENV_ROOT}/node\n\
                     ( {installer_env}; exec npm {install} --omit=dev --no-audit --no-fund --no-update-notifier )\n\
                     rm -f {ca}\n"
                )
            }
            Installer::Go => super::golang::install_script(&self.manifests, &ca, installer_env),
        }
    }

    /// Whether the build fetches anything over its network: pip and npm always; Go only when
    /// `go.mod` requires modules that `vendor/` does not hold (otherwise it is granted nothing).
    pub fn fetches(&self) -> bool {
        match self.manifests.installer {
            Installer::Pip | Installer::Npm => true,
            Installer::Go => crate::pack::dependencies::golang::downloads(&self.manifests),
        }
    }

    /// What the build container starts with, unpacked at `/` before it starts: [`ENV_ROOT`]
    /// owned by the action's user (the only place it may write to that is kept), the pack's
    /// manifests in their places under it, and the CA bundle when given. Fixed times and owners,
    /// so equal inputs give equal bytes.
    pub fn staging_tar(&self, ca_bundle: Option<&[u8]>) -> std::io::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        let root = ENV_ROOT.trim_start_matches('/');
        let folder = match self.manifests.installer {
            Installer::Pip => format!("{root}/{PIP_INPUTS}"),
            Installer::Npm => format!("{root}/node"),
            Installer::Go => super::golang::SRC_ROOT.trim_start_matches('/').to_string(),
        };
        let mut folders = vec![root.to_string(), folder.clone()];
        if let Some((parent, _)) = folder.rsplit_once('/') {
            folders.push(parent.to_string());
        }
        let mut files = Vec::new();
        for (name, bytes) in &self.manifests.files {
            let path = format!("{folder}/{name}");
            // Folders on the way (pip's includes and artifacts keep their places).
            let mut at = path.as_str();
            while let Some((parent, _)) = at.rsplit_once('/') {
                if parent.len() <= folder.len() {
                    break;
                }
                folders.push(parent.to_string());
                at = parent;
            }
            files.push((path, bytes.as_slice()));
        }
        folders.sort();
        folders.dedup();
        for name in &folders {
            append_entry(&mut builder, name, None)?;
        }
        for (path, bytes) in files {
            append_entry(&mut builder, &path, Some(bytes))?;
        }
        if let Some(ca) = ca_bundle {
            append_entry(&mut builder, &format!("{root}/{CA_FILE}"), Some(ca))?;
        }
        builder.into_inner()
    }

    /// The environment image's configuration: the runtime's variables for what was installed,
    /// `/pack` as working folder, the action's user.
    pub fn image_env(&self) -> Vec<String> {
        match self.manifests.installer {
            Installer::Pip => vec![
                format!("VIRTUAL_ENV={ENV_ROOT}/venv"),
                format!(
                    "PATH={ENV_ROOT}/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                ),
                "PYTHONPATH=/pack/lib".to_string(),
            ],
            Installer::Npm => vec![format!("NODE_PATH={ENV_ROOT}/node/node_modules")],
            Installer::Go => {
                vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()]
            }
        }
    }

    /// The key naming this environment: base image, runtime version, recipe (and its format),
    /// index settings and manifest bytes. Any change to one of them gives a new image.
    pub fn key(&self) -> String {
        hex::encode(Sha256::digest(self.key_parts().to_string().as_bytes()))
    }

    /// What [`EnvRecipe::key`] hashes: recipe format, base image id, runtime, version, the
    /// install script, the index settings' hashes and the dependency set's hash.
    pub fn key_parts(&self) -> serde_json::Value {
        serde_json::json!({
            "format": RECIPE_FORMAT,
            "base_image_id": self.base_image_id,
            "runtime": self.runtime,
            "version": self.version,
            // The CA only decides whether the build can reach the index, not what it installs;
            // the script is the same with or without it.
            "install_script": self.install_script(),
            // Hashed: an index URL may hold a credential, and `explain` prints these parts.
            "pip_index_url_sha256": self.index.pip_index_url.as_deref().map(sha256_hex),
            "npm_registry_sha256": self.index.npm_registry.as_deref().map(sha256_hex),
            "dependencies": self.manifests.dependency_hash(),
        })
    }

    /// The image tag: `packbox/env:<runtime>-<version>-<key prefix>`.
    pub fn tag(&self) -> String {
        format!(
            "{ENV_REPOSITORY}:{}-{}-{}",
            self.runtime,
            self.version,
            &self.key()[..24]
        )
    }
}

/// The SHA-256 of `text`, in hex.
fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The user environment builds run as, who owns what they install.
pub const BUILD_USER: (u64, u64) = (65534, 65534);

/// One entry of the staging archive: a folder (`None`) or a file, owned by [`BUILD_USER`].
fn append_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    name: &str,
    bytes: Option<&[u8]>,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_uid(BUILD_USER.0);
    header.set_gid(BUILD_USER.1);
    header.set_mtime(0);
    match bytes {
        None => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, format!("{name}/"), std::io::empty())
        }
        Some(bytes) => {
            header.set_mode(0o644);
            header.set_size(bytes.len() as u64);
            builder.append_data(&mut header, name, bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(requirements: &str) -> EnvRecipe {
        EnvRecipe {
            runtime: "python".into(),
            version: "3.11.2".into(),
            base_image_id: "sha256:base".into(),
            manifests: Manifests {
                installer: Installer::Pip,
                files: vec![("requirements.txt".into(), requirements.as_bytes().to_vec())],
                requirements: Vec::new(),
                sources: Vec::new(),
                program: None,
            },
            index: IndexSettings::default(),
        }
    }

    #[test]
    fn identical_inputs_give_identical_keys_and_staging() {
        let a = recipe("requests==2.31.0\n");
        let b = recipe("requests==2.31.0\n");
        assert_eq!(a.key(), b.key());
        assert_eq!(
            a.staging_tar(None).expect("tar"),
            b.staging_tar(None).expect("tar")
        );
    }

    #[test]
    fn every_input_changes_the_key() {
        let base = recipe("requests==2.31.0\n");
        let mut changed = vec![recipe("requests==2.28.0\n")];
        let mut other = base.clone();
        other.base_image_id = "sha256:other".into();
        changed.push(other);
        let mut other = base.clone();
        other.version = "3.11.3".into();
        changed.push(other);
        let mut other = base.clone();
        other.index.pip_index_url = Some("https://mirror.example/simple".into());
        changed.push(other);
        for other in changed {
            assert_ne!(base.key(), other.key(), "{other:?}");
        }
    }

    #[test]
    fn an_index_credential_never_reaches_the_key_parts_explain_prints() {
        let mut r = recipe("requests\n");
        r.index.pip_index_url = Some("https://user:s3cret-pw@pypi.example/simple".into());
        let parts = r.key_parts().to_string();
        assert!(!parts.contains("s3cret-pw"), "{parts}");
        assert!(!r.install_script().contains("s3cret-pw"));
        let mut other = r.clone();
        other.index.pip_index_url = Some("https://user:other-pw@pypi.example/simple".into());
        assert_ne!(r.key(), other.key(), "the URL still decides the key");
    }

    /// The entries of a staging archive: name, owner, mode.
    fn entries(archive: &[u8]) -> Vec<(String, u64, u32)> {
        let mut archive = tar::Archive::new(archive);
        archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.path().expect("path").display().to_string(),
                    e.header().uid().expect("uid"),
                    e.header().mode().expect("mode"),
                )
            })
            .collect()
    }

    #[test]
    fn the_ca_bundle_is_staged_removed_after_the_install_and_never_in_the_key_or_the_image() {
        let r = recipe("requests\n");
        let names: Vec<String> = entries(&r.staging_tar(Some(b"PEM")).expect("tar"))
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert!(
            names.contains(&"opt/packbox/build-ca.pem".to_string()),
            "{names:?}"
        );
        let script = r.install_script();
        assert!(script.contains("rm -f /opt/packbox/build-ca.pem"));
        assert!(r.image_env().iter().all(|e| !e.contains("build-ca")));
        assert_eq!(r.key(), recipe("requests\n").key());
    }

    #[test]
    fn python_install_bakes_the_venv_and_the_installer_alone_reads_its_environment() {
        let r = recipe("requests\n");
        let script = r.install_script();
        assert!(script.contains("python3 -m venv /opt/packbox/venv"));
        assert!(script.contains("pip install --no-cache-dir"));
        assert!(script.contains("compileall"));
        assert!(script.contains("pip freeze"));
        // The environment from stdin is read in the installer's own subshell.
        let install = script
            .lines()
            .find(|l| l.contains("pip install"))
            .expect("the install line");
        assert!(
            install.starts_with("( while IFS= read -r line"),
            "{install}"
        );
        assert!(install.ends_with(")"), "{install}");
        let env = r.image_env();
        assert!(env.contains(&"VIRTUAL_ENV=/opt/packbox/venv".to_string()));
        assert!(env.contains(&"PYTHONPATH=/pack/lib".to_string()));
    }

    #[test]
    fn pip_inputs_keep_their_places_under_one_folder_owned_by_the_build_user() {
        let mut r = recipe("-r reqs/base.txt\n");
        r.manifests
            .files
            .push(("reqs/base.txt".into(), b"six\n".to_vec()));
        let staged = entries(&r.staging_tar(None).expect("tar"));
        let names: Vec<&str> = staged.iter().map(|e| e.0.trim_end_matches('/')).collect();
        assert_eq!(
            names,
            [
                "opt/packbox",
                "opt/packbox/req",
                "opt/packbox/req/reqs",
                "opt/packbox/req/requirements.txt",
                "opt/packbox/req/reqs/base.txt"
            ]
        );
        assert!(staged.iter().all(|e| e.1 == BUILD_USER.0));
        assert!(r.install_script().contains("cd /opt/packbox/req"));
    }

    #[test]
    fn node_install_uses_ci_only_with_a_lock() {
        let mut r = recipe("");
        r.runtime = "node".into();
        r.manifests = Manifests {
            installer: Installer::Npm,
            files: vec![("package.json".into(), b"{}".to_vec())],
            requirements: Vec::new(),
            sources: Vec::new(),
            program: None,
        };
        assert!(r.install_script().contains("npm install --omit=dev"));
        r.manifests
            .files
            .push(("package-lock.json".into(), b"{}".to_vec()));
        assert!(r.install_script().contains("npm ci --omit=dev"));
        assert_eq!(r.image_env(), ["NODE_PATH=/opt/packbox/node/node_modules"]);
    }

    #[test]
    fn a_go_build_stages_the_sources_and_fetches_only_unvendored_modules() {
        let mut r = recipe("");
        r.runtime = "go".into();
        r.manifests = Manifests {
            installer: Installer::Go,
            files: vec![("actions/hello.go".into(), b"package main\n".to_vec())],
            requirements: Vec::new(),
            sources: Vec::new(),
            program: Some(crate::pack::dependencies::GoProgram {
                pack: "p".into(),
                entry: "actions/hello.go".into(),
            }),
        };
        let staged: Vec<String> = entries(&r.staging_tar(None).expect("tar"))
            .into_iter()
            .map(|e| e.0.trim_end_matches('/').to_string())
            .collect();
        assert_eq!(
            staged,
            [
                "opt/packbox",
                "opt/packbox/go",
                "opt/packbox/go/src",
                "opt/packbox/go/src/actions",
                "opt/packbox/go/src/actions/hello.go"
            ]
        );
        assert!(!r.fetches(), "the standard library needs no network");
        assert!(r.install_script().contains("go build"));
        assert_eq!(lock_file(Installer::Go), "/opt/packbox/go/build-info.txt");
        r.manifests
            .requirements
            .push(crate::pack::dependencies::Requirement {
                text: "a.example/x v1.0.0".into(),
                source: "go.mod:3".into(),
            });
        assert!(r.fetches());
        r.manifests
            .files
            .push(("vendor/modules.txt".into(), Vec::new()));
        assert!(!r.fetches(), "vendored");
        assert!(recipe("x\n").fetches());
    }

    #[test]
    fn tag_carries_runtime_version_and_key() {
        let r = recipe("x\n");
        let tag = r.tag();
        assert!(tag.starts_with("packbox/env:python-3.11.2-"), "{tag}");
        assert!(
            r.key()
                .starts_with(tag.rsplit('-').next().expect("key part"))
        );
    }
}
