//! What every stage leans on and nothing else: files packbox does not trust, read with caps and
//! YAML checked before parsing (`input.rs`); atomic writes into the state folder (`state.rs`); the
//! record of what packbox made on engines (`owned.rs`); an error and its causes as one line
//! (`error_text.rs`); times as the stores keep them (`clock.rs`); the names an engine takes
//! (`names.rs`); Attune's integer execution ids, unique in a state folder (`exec_ids.rs`);
//! operator rules keyed by globs (`globs.rs`); a run's phase events (`phase.rs`). Imports nothing
//! of packbox, so any module may use it without making a cycle.

pub mod clock;
pub mod error_text;
pub mod exec_ids;
pub mod globs;
pub mod input;
pub mod names;
pub mod owned;
pub mod phase;
pub mod state;
