//! `packbox serve`: the executor as an HTTP service. Lives in the binary and uses the library's
//! facade only, like the command line does.

pub mod records;
