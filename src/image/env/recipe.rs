//! What an environment image is made of: the pack's dependency manifests, the generated
//! Dockerfile, and the key that names the result. Pure code: no engine, no files but the pack's.

use sha2::{Digest, Sha256};

use crate::pack::dependencies::{Installer, Manifests};

/// Bumped whenever the generated Dockerfiles change meaning, so old images are not reused.
pub const RECIPE_FORMAT: u32 = 2;
/// The repository all environment images are tagged in.
pub const ENV_REPOSITORY: &str = "packbox/env";
/// Where the dependencies live inside an environment image.
const ENV_ROOT: &str = "/opt/packbox";
/// The folder of pip's inputs, in the build context and under [`ENV_ROOT`]: the merged
/// requirements file, what it includes and the local artifacts it names, at their places in the
/// pack, so that pip (run there) finds them as it would in the pack.
const PIP_INPUTS: &str = "req";
/// Name of the CA bundle inside the build context (removed before the build's last layer).
const CA_FILE: &str = "build-ca.pem";

/// Where an environment image records what was resolved: pip's freeze, npm's lock.
pub fn lock_file(installer: Installer) -> &'static str {
    match installer {
        Installer::Pip => "/opt/packbox/pip-freeze.txt",
        Installer::Npm => "/opt/packbox/node/package-lock.json",
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
    /// The generated Dockerfile. `with_ca` adds the build-time CA bundle and removes it again.
    pub fn dockerfile(&self, with_ca: bool) -> String {
        let copy_ca = if with_ca {
            format!("COPY {CA_FILE} {ENV_ROOT}/{CA_FILE}\n")
        } else {
            String::new()
        };
        // Trust for pip, npm, curl and Python's ssl during the RUN step only: never in ENV.
        let trust = if with_ca {
            let ca = format!("{ENV_ROOT}/{CA_FILE}");
            format!(
                "PIP_CERT={ca} NPM_CONFIG_CAFILE={ca} CURL_CA_BUNDLE={ca} SSL_CERT_FILE={ca} REQUESTS_CA_BUNDLE={ca} "
            )
        } else {
            String::new()
        };
        // Declared only when set: an index override comes in as a build argument.
        let index_arg = match (self.manifests.installer, &self.index) {
            (
                Installer::Pip,
                IndexSettings {
                    pip_index_url: Some(_),
                    ..
                },
            ) => "ARG PIP_INDEX_URL\n",
            (
                Installer::Npm,
                IndexSettings {
                    npm_registry: Some(_),
                    ..
                },
            ) => "ARG NPM_CONFIG_REGISTRY\n",
            _ => "",
        };
        match self.manifests.installer {
            Installer::Pip => format!(
                "FROM {base}\n\
                 USER root\n\
                 {index_arg}\
                 COPY {PIP_INPUTS}/ {ENV_ROOT}/{PIP_INPUTS}/\n\
                 {copy_ca}\
                 RUN set -eu; cd {ENV_ROOT}/{PIP_INPUTS}; \\\n\
                 \x20   python3 -m venv {ENV_ROOT}/venv; \\\n\
                 \x20   {trust}{ENV_ROOT}/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-input -r requirements.txt; \\\n\
                 \x20   {ENV_ROOT}/venv/bin/python -m compileall -q {ENV_ROOT}/venv >/dev/null; \\\n\
                 \x20   {ENV_ROOT}/venv/bin/pip freeze --disable-pip-version-check > {ENV_ROOT}/pip-freeze.txt; \\\n\
                 \x20   rm -f {ENV_ROOT}/{CA_FILE}\n\
                 ENV VIRTUAL_ENV={ENV_ROOT}/venv \\\n\
                 \x20   PATH={ENV_ROOT}/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\\n\
                 \x20   PYTHONPATH=/pack/lib\n\
                 WORKDIR /pack\n\
                 USER 65534:65534\n",
                base = self.base_image_id,
            ),
            Installer::Npm => {
                let lock = if self.manifests.has_file("package-lock.json") {
                    format!("COPY package-lock.json {ENV_ROOT}/node/package-lock.json\n")
                } else {
                    String::new()
                };
                let install = if self.manifests.has_file("package-lock.json") {
                    "ci"
                } else {
                    "install"
                };
                format!(
                    "FROM {base}\n\
                     USER root\n\
                     {index_arg}\
                     COPY package.json {ENV_ROOT}/node/package.json\n\
                     {lock}\
                     {copy_ca}\
                     RUN set -eu; cd {ENV_ROOT}/node; \\\n\
                     \x20   {trust}NPM_CONFIG_CACHE=/tmp/npm-cache npm {install} --omit=dev --no-audit --no-fund --no-update-notifier; \\\n\
                     \x20   rm -rf /tmp/npm-cache {ENV_ROOT}/{CA_FILE}\n\
                     ENV NODE_PATH={ENV_ROOT}/node/node_modules\n\
                     WORKDIR /pack\n\
                     USER 65534:65534\n",
                    base = self.base_image_id,
                )
            }
        }
    }

    /// The key naming this environment: base image, runtime version, recipe (and its format),
    /// index settings and manifest bytes. Any change to one of them gives a new image.
    pub fn key(&self) -> String {
        hex::encode(Sha256::digest(self.key_parts().to_string().as_bytes()))
    }

    /// What [`EnvRecipe::key`] hashes: recipe format, base image id, runtime, version, the
    /// generated Dockerfile, index settings and the dependency set's hash.
    pub fn key_parts(&self) -> serde_json::Value {
        serde_json::json!({
            "format": RECIPE_FORMAT,
            "base_image_id": self.base_image_id,
            "runtime": self.runtime,
            "version": self.version,
            // The CA only decides whether the build can reach the index, not what it installs.
            "dockerfile": self.dockerfile(false),
            "pip_index_url": self.index.pip_index_url,
            "npm_registry": self.index.npm_registry,
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

    /// The build context: manifests, the Dockerfile and, when given, the CA bundle; fixed mtimes
    /// so that equal inputs give equal bytes.
    pub fn context_tar(&self, ca_bundle: Option<&[u8]>) -> std::io::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        let dockerfile = self.dockerfile(ca_bundle.is_some());
        append(&mut builder, "Dockerfile", dockerfile.as_bytes())?;
        for (name, bytes) in &self.manifests.files {
            let name = match self.manifests.installer {
                Installer::Pip => format!("{PIP_INPUTS}/{name}"),
                Installer::Npm => name.clone(),
            };
            append(&mut builder, &name, bytes)?;
        }
        if let Some(ca) = ca_bundle {
            append(&mut builder, CA_FILE, ca)?;
        }
        builder.into_inner()
    }
}

fn append(builder: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    builder.append_data(&mut header, name, bytes)
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
            },
            index: IndexSettings::default(),
        }
    }

    #[test]
    fn identical_inputs_give_identical_keys_and_contexts() {
        let a = recipe("requests==2.31.0\n");
        let b = recipe("requests==2.31.0\n");
        assert_eq!(a.key(), b.key());
        assert_eq!(
            a.context_tar(None).expect("tar"),
            b.context_tar(None).expect("tar")
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
    fn the_ca_bundle_does_not_change_the_key_and_never_reaches_env() {
        let r = recipe("requests\n");
        let with_ca = r.dockerfile(true);
        assert!(with_ca.contains("COPY build-ca.pem"));
        assert!(with_ca.contains("rm -f /opt/packbox/build-ca.pem"));
        let env_lines: Vec<_> = with_ca.lines().filter(|l| l.starts_with("ENV")).collect();
        assert!(
            env_lines.iter().all(|l| !l.contains("build-ca")),
            "{env_lines:?}"
        );
        assert_eq!(r.key(), recipe("requests\n").key());
    }

    #[test]
    fn python_recipe_bakes_the_venv_and_runs_unprivileged() {
        let dockerfile = recipe("requests\n").dockerfile(false);
        assert!(dockerfile.starts_with("FROM sha256:base\n"));
        assert!(dockerfile.contains("pip install --no-cache-dir"));
        assert!(dockerfile.contains("compileall"));
        assert!(dockerfile.contains("pip freeze"));
        assert!(dockerfile.contains("VIRTUAL_ENV=/opt/packbox/venv"));
        assert!(dockerfile.contains("PYTHONPATH=/pack/lib"));
        assert!(dockerfile.trim_end().ends_with("USER 65534:65534"));
    }

    #[test]
    fn pip_inputs_keep_their_places_under_one_folder() {
        let mut r = recipe("-r reqs/base.txt\n");
        r.manifests
            .files
            .push(("reqs/base.txt".into(), b"six\n".to_vec()));
        let context = r.context_tar(None).expect("tar");
        let mut archive = tar::Archive::new(context.as_slice());
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            ["Dockerfile", "req/requirements.txt", "req/reqs/base.txt"]
        );
        let dockerfile = r.dockerfile(false);
        assert!(dockerfile.contains("COPY req/ /opt/packbox/req/"));
        assert!(dockerfile.contains("cd /opt/packbox/req;"));
        assert!(dockerfile.contains(
            "pip install --no-cache-dir --disable-pip-version-check --no-input -r requirements.txt"
        ));
    }

    #[test]
    fn node_recipe_uses_ci_only_with_a_lock() {
        let mut r = recipe("");
        r.runtime = "node".into();
        r.manifests = Manifests {
            installer: Installer::Npm,
            files: vec![("package.json".into(), b"{}".to_vec())],
            requirements: Vec::new(),
            sources: Vec::new(),
        };
        assert!(r.dockerfile(false).contains("npm install --omit=dev"));
        r.manifests
            .files
            .push(("package-lock.json".into(), b"{}".to_vec()));
        let dockerfile = r.dockerfile(false);
        assert!(dockerfile.contains("npm ci --omit=dev"));
        assert!(dockerfile.contains("NODE_PATH=/opt/packbox/node/node_modules"));
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
