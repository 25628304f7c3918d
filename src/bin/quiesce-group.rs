//! `quiesce-group`: the consistency-group helper a `quiesce --group` run
//! starts (SPEC.md §11). It holds the etcd client, the lease and the round
//! in a process of its own, so that the runner of a single VM never maps
//! the TLS and HTTP code. Not meant to be run by hand.

fn main() -> std::process::ExitCode {
    quiesce::group::serve::main()
}
