//! `nismooth status OUTDIR`: a run's progress as its journals tell it
//! (`report::status` reads them), printed once or refreshed in place.

use std::io::IsTerminal;

use crate::report::status::{RunState, Snapshot, Watcher};

use super::cli::StatusArgs;
use super::{EXIT_FAILED_IMAGES, EXIT_OK, EXIT_STOPPED, EXIT_USAGE};

/// Still running, and a rank gone or stalled: codes a script can wait on.
const EXIT_RUNNING: u8 = 5;
const EXIT_NOT_FINISHED: u8 = 6;

pub fn status(args: &StatusArgs) -> anyhow::Result<u8> {
    if let Some(s) = args.watch {
        let sleep = std::time::Duration::try_from_secs_f64(s).ok();
        anyhow::ensure!(
            s > 0.0 && sleep.is_some_and(|d| d.as_secs() <= 86_400),
            "--watch needs a number of seconds above 0 and at most a day (86400)"
        );
    }
    let mut watcher = match Watcher::new(&args.outdir, args.run.as_deref()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("nismooth: status: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    let clear = args.watch.is_some() && !args.json && std::io::stdout().is_terminal();
    loop {
        let snapshot = match watcher.refresh(crate::metrics::unix_now_f64()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("nismooth: status: {e}");
                return Ok(EXIT_USAGE);
            }
        };
        let text = match args.json {
            true => serde_json::to_string(&snapshot)? + "\n",
            false => render(&snapshot),
        };
        super::say(&format!(
            "{}{text}",
            if clear { "\x1b[H\x1b[2J" } else { "" }
        ))?;
        let running = snapshot.state == RunState::Running;
        match args.watch {
            Some(s) if running => std::thread::sleep(std::time::Duration::from_secs_f64(s)),
            _ => return Ok(exit_code(&snapshot.state)),
        }
    }
}

fn exit_code(state: &RunState) -> u8 {
    match state {
        RunState::Finished => EXIT_OK,
        RunState::FinishedWithFailures { .. } => EXIT_FAILED_IMAGES,
        RunState::StoppedEarly { .. } => EXIT_STOPPED,
        RunState::Running => EXIT_RUNNING,
        RunState::NotFinished { .. } => EXIT_NOT_FINISHED,
    }
}

/// The status as a person reads it: the run, its progress, each rank, the
/// failures, and how it stands.
fn render(s: &Snapshot) -> String {
    use crate::report::printable_value as shown;
    let count = |n: Option<usize>| n.map_or("?".to_string(), |n| n.to_string());
    let took = match s.state {
        RunState::Running => format!("started {} ago", ago(s.elapsed_s)),
        _ => format!("took {}", ago(s.elapsed_s)),
    };
    let mut out = format!(
        "run {} in {}: {} rank(s), {} image(s), {took}\n",
        shown(&s.run),
        shown(&s.outdir.display().to_string()),
        count(s.ranks_total),
        count(s.images),
    );
    let share = match s.images {
        Some(n) if n > 0 => format!(" ({:.1}%)", 100.0 * s.done as f64 / n as f64),
        _ => String::new(),
    };
    let rate = s
        .rate_per_s
        .map_or(String::new(), |r| format!(", {r:.2} images/s"));
    let eta = s
        .eta_s
        .map_or(String::new(), |e| format!(", about {} left", ago(e)));
    out += &format!(
        "  done     {} of {}{share}, {} failed{rate}{eta}\n",
        s.done,
        count(s.images),
        s.failed.len()
    );
    for r in &s.ranks {
        let median = r
            .median_image_s
            .map_or(String::new(), |m| format!(", median image {m:.2} s"));
        out += &format!(
            "  rank {:<4}{} image(s){median}, last written {} ago on {} (pid {}): {}\n",
            r.rank,
            r.images,
            ago(r.last_activity_s_ago),
            shown(&r.host),
            r.pid,
            r.state
        );
    }
    for f in s.failed.iter().take(10) {
        out += &format!("  failed   {}: {}\n", shown(&f.input), shown(&f.error));
    }
    if s.failed.len() > 10 {
        out += &format!(
            "  failed   and {} more (--json lists all)\n",
            s.failed.len() - 10
        );
    }
    out += &format!("  state    {}\n", state_words(&s.state));
    if !s.other_runs.is_empty() {
        out += &format!(
            "  also     {} other run(s) wrote journals here (a job array's other tasks, earlier runs): \
             this is run {} alone; `--run ID` shows another ({})\n",
            s.other_runs.len(),
            shown(&s.run),
            shown(&s.other_runs.join(", "))
        );
    }
    out
}

fn state_words(state: &RunState) -> String {
    match state {
        RunState::Running => "running".into(),
        RunState::Finished => "finished: every image written or skipped".into(),
        RunState::FinishedWithFailures { failed } => {
            format!("ended with {failed} failed image(s) (named above)")
        }
        RunState::StoppedEarly { left } => format!(
            "stopped early (a signal or the deadline): {left} image(s) left; `nismooth run ... --resume` finishes them"
        ),
        RunState::NotFinished { ranks } => format!(
            "not finished: rank(s) {} stopped without ending (killed, or a node lost) or stalled; \
             `--resume` finishes what they left",
            ranks
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A duration as people say it: 42 s, 3 min 05 s, 2 h 10 min.
fn ago(s: f64) -> String {
    let s = s.max(0.0);
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{} min {:02} s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{} h {:02} min",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}
