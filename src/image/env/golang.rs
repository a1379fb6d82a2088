//! Go environments: an action's program compiled into the image at build time, because a run
//! cannot build it (`go run` executes what it builds, and a run's `/tmp` is `noexec` and its
//! root read-only). The build container (the usual build sandbox, on a network whose only way
//! out is packbox's egress proxy) runs `go build` with cgo off, no `-toolexec`, no `go generate`
//! and the local toolchain only, so the compiler never runs the pack's code; its cache and
//! module folder are on the build's private `/tmp`, which is not committed. The binary lands at
//! [`BIN_ROOT`]`/<entry point>`, where the catalog's `go` interpreter finds it. Pure code.

use crate::pack::dependencies::Manifests;
use crate::pack::dependencies::golang::{VENDOR_MODULES, downloads};

/// Where compiled actions live in the image: `<BIN_ROOT>/<entry point relative to actions/>`.
pub const BIN_ROOT: &str = "/opt/packbox/go/bin";
/// Where the pack's Go sources are staged for the build (removed before the commit).
pub const SRC_ROOT: &str = "/opt/packbox/go/src";
/// What the build records of the binary: Go's version and the modules it holds, as `go
/// version -m` reads them from the binary (without running it).
pub const BUILD_INFO: &str = "/opt/packbox/go/build-info.txt";
/// Go's module proxy, the only place a build downloads modules from (and only when `go.mod`
/// requires modules that `vendor/` does not hold).
pub const MODULE_PROXY_HOST: &str = "proxy.golang.org";

/// The build script of a Go environment (see [`super::EnvRecipe::install_script`]); `ca` is the
/// path the CA bundle is staged at, `installer_env` the line that reads the proxy variables
/// from stdin.
pub fn install_script(manifests: &Manifests, ca: &str, installer_env: &str) -> String {
    let entry = manifests
        .program
        .as_ref()
        .map(|p| p.entry.as_str())
        .unwrap_or_default();
    let binary = format!("{BIN_ROOT}/{}", entry.trim_start_matches("actions/"));
    let folder = binary.rsplit_once('/').map(|(f, _)| f).unwrap_or(BIN_ROOT);
    let module = manifests.has_file("go.mod");
    // GOFLAGS also keeps a pack's `go.mod` from asking for flags of its own choosing.
    let flags = match (module, manifests.has_file(VENDOR_MODULES)) {
        (false, _) => "",
        (true, true) => "-mod=vendor",
        (true, false) => "-mod=readonly",
    };
    let (proxy, on_failure) = if downloads(manifests) {
        (
            format!("https://{MODULE_PROXY_HOST}"),
            format!(
                " || {{ code=$?; echo \"packbox: go build failed; go.mod requires modules that vendor/ does not hold, and the build downloads them only from {MODULE_PROXY_HOST} through packbox's egress proxy: if that cannot be reached here, vendor them into the pack (go mod vendor)\" >&2; exit $code; }}"
            ),
        )
    } else {
        ("off".to_string(), String::new())
    };
    let (entry, binary, folder) = (quoted(entry), quoted(&binary), quoted(folder));
    format!(
        "set -eu\n\
         export HOME=/tmp GOENV=off GOWORK=off GOTOOLCHAIN=local GOTELEMETRY=off CGO_ENABLED=0\n\
         export GOCACHE=/tmp/go-cache GOPATH=/tmp/go GOMODCACHE=/tmp/go/pkg/mod GOFLAGS={flags} GOPROXY={proxy} GOSUMDB=off\n\
         if [ -f {ca} ]; then export SSL_CERT_FILE={ca}; fi\n\
         cd {SRC_ROOT}\n\
         mkdir -p {folder}\n\
         echo \"compiling \"{entry}\n\
         ( {installer_env}; exec go build -trimpath -buildvcs=false -o {binary} ./{entry} ){on_failure}\n\
         go version -m {binary} > {BUILD_INFO}\n\
         rm -rf {SRC_ROOT} {ca}\n"
    )
}

/// `text` as one single-quoted shell word.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::dependencies::{GoProgram, Installer, Requirement};

    fn manifests(files: &[&str], requires: bool) -> Manifests {
        Manifests {
            installer: Installer::Go,
            files: files.iter().map(|f| (f.to_string(), Vec::new())).collect(),
            requirements: if requires {
                vec![Requirement {
                    text: "a.example/x v1.0.0".into(),
                    source: "go.mod:3".into(),
                }]
            } else {
                Vec::new()
            },
            sources: Vec::new(),
            program: Some(GoProgram {
                pack: "p".into(),
                entry: "actions/sub/hello.go".into(),
            }),
        }
    }

    #[test]
    fn the_compiler_runs_no_pack_code_and_keeps_its_caches_off_the_image() {
        let script = install_script(&manifests(&["actions/sub/hello.go"], false), "/ca", "read");
        for needed in [
            "CGO_ENABLED=0",
            "GOTOOLCHAIN=local",
            "GOPROXY=off",
            "GOCACHE=/tmp/",
            "GOPATH=/tmp/",
            "go build -trimpath -buildvcs=false -o '/opt/packbox/go/bin/sub/hello.go' ./'actions/sub/hello.go'",
            "rm -rf /opt/packbox/go/src /ca",
        ] {
            assert!(script.contains(needed), "{needed} in {script}");
        }
        for never in ["toolexec", "generate", "-mod="] {
            assert!(!script.contains(never), "{never} in {script}");
        }
    }

    #[test]
    fn vendored_modules_build_offline_and_required_ones_through_the_proxy_only() {
        let vendored = install_script(
            &manifests(&["go.mod", VENDOR_MODULES, "actions/sub/hello.go"], true),
            "/ca",
            "read",
        );
        assert!(vendored.contains("GOFLAGS=-mod=vendor"));
        assert!(vendored.contains("GOPROXY=off"));
        let fetched = install_script(&manifests(&["go.mod", "go.sum"], true), "/ca", "read");
        assert!(fetched.contains("GOFLAGS=-mod=readonly"));
        assert!(fetched.contains("GOPROXY=https://proxy.golang.org"));
        assert!(fetched.contains("vendor them into the pack"));
    }

    #[test]
    fn an_entry_point_is_one_shell_word_whatever_it_holds() {
        let mut set = manifests(&[], false);
        if let Some(program) = set.program.as_mut() {
            program.entry = "actions/a'$(id)'.go".into();
        }
        let script = install_script(&set, "/ca", "read");
        assert!(
            script.contains("./'actions/a'\\''$(id)'\\''.go'"),
            "{script}"
        );
    }
}
