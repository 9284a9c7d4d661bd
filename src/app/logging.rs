//! Log lines on standard error, one format for every subcommand; results
//! (the summary table, `report`, `estimate`) go to standard output.
//!
//! How much is said: `info` by default (what a batch log needs: the plan,
//! progress, refusals); `-q` warnings and errors only; `-v` debug (what
//! a developer needs: backend probing, each image handed out), `-vv` trace.
//! `RUST_LOG` (env_logger's syntax, per module) is honoured when neither
//! flag is given.

use std::sync::OnceLock;

/// The level `-q`/`-v` chose, if either was given.
static CHOSEN: OnceLock<Option<log::LevelFilter>> = OnceLock::new();

/// Records `-q` and the number of `-v`s (before `init`).
pub fn choose(quiet: bool, verbose: u8) {
    let level = match (quiet, verbose) {
        (true, _) => Some(log::LevelFilter::Warn),
        (false, 0) => None,
        (false, 1) => Some(log::LevelFilter::Debug),
        (false, _) => Some(log::LevelFilter::Trace),
    };
    let _ = CHOSEN.set(level);
}

/// Whether `-q` was given: progress is not shown either.
pub fn quiet() -> bool {
    CHOSEN.get().copied().flatten() == Some(log::LevelFilter::Warn)
}

/// Log lines go to stderr as `[time LEVEL] message`. With several ranks each
/// line names its rank, and only root speaks at `info` (N ranks would
/// otherwise repeat every line N times in the job's output file).
pub fn init(rank: usize, size: usize) {
    let default = if rank == 0 { "info" } else { "warn" };
    let mut b = match CHOSEN.get().copied().flatten() {
        Some(level) => {
            let mut b = env_logger::Builder::new();
            b.filter_level(level);
            b
        }
        None => {
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        }
    };
    use std::io::Write;
    b.format(move |f, rec| {
        let who = if size > 1 {
            format!(" rank {rank}/{size}")
        } else {
            String::new()
        };
        // File names reach the log as they are on disk: a new line or an
        // escape in one must not make a line of its own or drive the terminal.
        writeln!(
            f,
            "[{} {}{who}] {}",
            f.timestamp_seconds(),
            rec.level(),
            crate::report::printable_value(&rec.args().to_string())
        )
    });
    b.init();
}
