//! The command line's floor: the only code that knows clap (feature `cli`).
//! `cli` defines the options; each subcommand's file turns them into the
//! library's plain settings, runs it, and says what happened as an exit
//! code. Nothing beneath takes a clap type, and nothing beneath imports
//! from here.

pub mod cli;

mod bench;
mod bids;
mod estimate;
mod generate;
mod help;
mod logging;
mod report;
mod run;
mod sbatch;
pub mod shell;
mod status;
mod study;

use cli::{Cli, Command};

/// Exit codes: every image done, some image failed, the command was
/// refused, stopped early (a signal or the deadline; `--resume` finishes
/// the rest), the work done but what is written after it lost.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED_IMAGES: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_STOPPED: u8 = 3;
/// The images were all done (the journal vouches for each output), but the
/// report, the CSV or the BIDS metadata after them could not be written.
/// A run also stopped early or with failed images exits 3 or 1 instead,
/// with the lost report said first.
pub const EXIT_REPORT_LOST: u8 = 4;

/// The command line this process was given, as a report records it: the
/// arguments `main` parsed (the wheel's too, not Python's), any byte that
/// is not UTF-8 shown as U+FFFD.
static COMMAND: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

pub(crate) fn command_line() -> Vec<String> {
    COMMAND.get().cloned().unwrap_or_default()
}

/// The `nismooth` command from its arguments (the program's name first) to
/// its exit code: the binary's `main` and the wheel's console script
/// (`python.rs`) both run this, so they are one program. The allocator
/// tuning is the binary's in the wheel's command too: that process runs
/// nothing but this command.
pub fn main<I, T>(argv: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    crate::metrics::mark_start();
    crate::metrics::fixed_mmap_threshold();
    let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    let _ = COMMAND.set(
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    );
    let parsed = shell::command()
        .try_get_matches_from(argv)
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m));
    match parsed {
        Ok(cli) => dispatch(cli),
        Err(e) => {
            // Help and version go to stdout with exit 0, mistakes to stderr with 2.
            let _ = e.print();
            e.exit_code() as u8
        }
    }
}

/// Runs the subcommand; an error is one line on stderr and exit 2.
pub fn dispatch(cli: Cli) -> u8 {
    logging::choose(cli.quiet, cli.verbose);
    if !matches!(cli.command, Command::Run(_) | Command::Bids(_)) {
        // `run` sets its logging once it knows its rank.
        logging::init(0, 1);
    }
    let result = match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Bids(args) => bids::bids(&args),
        Command::Generate(args) => generate::generate(&args),
        Command::Report(args) => report::report(&args),
        Command::Status(args) => status::status(&args),
        Command::Sbatch(args) => sbatch::sbatch(&args),
        Command::Study(args) => study::study(&args),
        Command::Estimate(args) => estimate::estimate(&args).map(|_| EXIT_OK),
        Command::Completions(args) => shell::completions(&args),
        Command::Man => shell::man(),
        Command::Weights(args) => bench::weights(&args),
        Command::BenchFilter(args) => bench::bench_filter(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nismooth: error: {}", error_text(&e));
            EXIT_USAGE
        }
    }
}

/// Writes `text` to standard output. A reader that went away (`| head`)
/// ends the output quietly, as it ends coreutils'; any other failure (a
/// full disk, `>/dev/full`) is an error. `print!` would panic on either.
pub fn say(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| anyhow::anyhow!("writing to standard output: {e}")),
    }
}

/// An error and its causes on one line, printable: each cause once (an
/// error that already shows its source's words is not followed by them
/// again, as `{:#}` would).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if !text.ends_with(&cause) {
            if !text.is_empty() {
                text += ": ";
            }
            text += &cause;
        }
    }
    crate::report::printable_value(&text)
}
