//! What packagers install beside the binary: shell completions
//! (`nismooth completions bash|zsh|fish`) and a man page (`nismooth man`),
//! both made from the same clap definitions as the command line itself, so
//! they never drift from it; and the long `--version`, which says what this
//! build and this CPU run.

use clap::CommandFactory;

use super::cli::{Cli, CompletionsArgs, VERSION};
use super::EXIT_OK;

/// The clap command with `--version`'s long form: the features compiled in
/// (first line, which `sbatch` reads), the vector code this CPU runs, the
/// numpy `exp` the taps reproduce and the MPI library linked in.
pub fn command() -> clap::Command {
    let level = crate::filter::simd::level();
    let exp = crate::filter::ExpFlavour::detect();
    // Which MPI the binary was built against: a site's module must match it.
    #[cfg(feature = "mpi")]
    let mpi = format!(
        "\nMPI: {} (built against it)",
        crate::driver::mpi::library()
    );
    #[cfg(not(feature = "mpi"))]
    let mpi = "";
    let long = format!(
        "{VERSION}\nSIMD: {} on this CPU (NISMOOTH_SIMD=avx2|scalar caps it)\nexp: {} (numpy's exp on this CPU; NISMOOTH_EXP sets it){mpi}",
        format!("{level:?}").to_lowercase(),
        serde_json::to_value(exp).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    );
    // clap keeps a &'static str; the string lives as long as the process.
    Cli::command().long_version(&*Box::leak(long.into_boxed_str()))
}

/// `nismooth completions SHELL`: the script on standard output.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<u8> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "nismooth", &mut std::io::stdout());
    Ok(EXIT_OK)
}

/// `nismooth man`: the page (roff) on standard output, every subcommand in it.
pub fn man() -> anyhow::Result<u8> {
    let cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap names are &'static str; a few short strings for one process.
        let name: &'static str = Box::leak(format!("nismooth-{}", sub.get_name()).into_boxed_str());
        let page = sub.clone().name(name).display_name(name).version(VERSION);
        clap_mangen::Man::new(page).render(&mut out)?;
    }
    Ok(EXIT_OK)
}
