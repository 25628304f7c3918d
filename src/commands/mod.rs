//! One module per subcommand: each returns the status document and the exit
//! code; `main` only parses the command line and prints.

pub mod audit;
pub mod check;
pub mod freeze;
pub mod phase;
pub mod recover;
pub mod snapshot;
pub mod thaw;
