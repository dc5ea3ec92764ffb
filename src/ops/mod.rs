//! Commands as library calls: each takes an open repository and options, does
//! its locking, and returns a result for the CLI to print.

pub mod check;
