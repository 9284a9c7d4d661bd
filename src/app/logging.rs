//! Log lines on stderr, one format for every subcommand.

/// Log lines go to stderr. With several ranks each line names its rank, and
/// only root speaks at `info` unless RUST_LOG says otherwise: N ranks would
/// otherwise repeat every line N times in the job's output file.
pub fn init(rank: usize, size: usize) {
    let default = if rank == 0 { "info" } else { "warn" };
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    b.format_timestamp_secs();
    if size > 1 {
        use std::io::Write;
        b.format(move |f, rec| {
            writeln!(
                f,
                "[{} {} rank {rank}/{size}] {}",
                f.timestamp_seconds(),
                rec.level(),
                rec.args()
            )
        });
    }
    b.init();
}
