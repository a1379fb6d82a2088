//! The Attune action contract, apart from how containers are run: the parameter document and how
//! it is encoded for the action, secrets and their scrubbing, how output is parsed, and the
//! outcome a run reports.

pub mod artifacts;
pub mod delivery;
pub mod exit;
pub mod outcome;
pub mod parse;
pub mod result;
pub mod scrub;
pub mod secrets;

pub use outcome::{Outcome, Status};
