//! Environment images: one image per (runtime version, dependency set), with the pack's
//! dependencies installed at build time on top of the runtime image, so every run starts from
//! an image that already holds them.

pub mod build;
pub mod golang;
pub mod inventory;
pub mod network;
pub mod recipe;

pub use crate::pack::dependencies::{Installer, Manifests};
pub use build::{BuildNetwork, BuildSettings, DEFAULT_BUILD_MEMORY, EnvError, ensure};
pub use recipe::{EnvRecipe, IndexSettings, lock_file};
