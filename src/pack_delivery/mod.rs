//! The pack delivered by content, for engines that cannot see this machine's files: the pack
//! folder read once as a tree with one SHA-256 that names it everywhere (`tree.rs`), a read-only
//! volume filled once per content and engine (`volume.rs`), and, on a Swarm, the pack as an image
//! layer built once per content and pushed by digest (`image.rs`).
//!
//! On a local engine the pack is bind-mounted instead and none of this runs; the tree digest is
//! still what a run's record names.
//!
//! packbox's own init, the PID 1 of action containers, travels the same way on every engine: in
//! a read-only volume named by its digest, filled once by the same lock (`init.rs`).

pub mod image;
pub mod init;
pub mod tree;
pub mod volume;
