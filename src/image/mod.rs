//! The image stage: everything that makes the image a run starts from. Runtime images
//! (`runtime.rs`: present, built from their recipe, or pulled pinned by digest), Debian base images
//! imported from a tarball (`base.rs`), which versions the images really hold (`probe.rs`), the
//! selection among verified versions and the image a run needs (`prepare.rs`), environment images
//! with a pack's dependencies baked in (`env/`), and images copied onto an engine without a
//! registry (`copy.rs`).
//!
//! Below it is only the engine seam; above it the executor asks `prepare` for an image and gets
//! one that exists.

pub mod base;
pub mod copy;
pub mod env;
pub mod prepare;
pub mod probe;
pub mod runtime;
