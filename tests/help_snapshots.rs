//! Snapshots of the command line as a user meets it: every subcommand's
//! `--help` and the first messages a mistake gets (a typo's suggestion, a
//! missing input, a value out of range, `--array` outside a Slurm job),
//! compared byte for byte by trycmd.
//! A changed help text fails here until its snapshot is updated
//! (`TRYCMD=overwrite cargo test --test help_snapshots`) and reviewed in
//! the diff like code.

#[test]
fn help_and_first_messages() {
    trycmd::TestCases::new()
        .env("RUST_LOG", "warn")
        .case("tests/cmd/*.toml");
}
