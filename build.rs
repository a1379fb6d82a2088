//! Builds packbox-init (`init/`), the PID 1 of action containers, as a static binary and puts it
//! where `src/init` embeds it.
//!
//! Static (glibc with `crt-static`) because it runs inside every runtime image, whatever C
//! library the image has (Debian bullseye, bookworm, trixie, or an operator's own). A separate
//! crate built by a nested cargo with its own target folder: the static flag must apply to that
//! binary alone, never to packbox's own build scripts and proc macros.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    for path in ["init/Cargo.toml", "init/Cargo.lock", "init/src"] {
        println!("cargo::rerun-if-changed={path}");
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let target_dir = out_dir.join("init-target");
    let mut build = Command::new(cargo);
    build
        .args(["build", "--release", "--locked", "--quiet", "--target"])
        .arg(&target)
        .arg("--manifest-path")
        .arg(manifest_dir.join("init/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static");
    // The outer build's settings are not the init's: its own flags, wrappers (clippy, coverage)
    // and target folder.
    for name in [
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        build.env_remove(name);
    }
    let status = build.status().expect("cargo runs to build packbox-init");
    assert!(status.success(), "building packbox-init failed");
    let built = target_dir.join(&target).join("release/packbox-init");
    std::fs::copy(&built, out_dir.join("packbox-init")).expect("copying packbox-init");
}
