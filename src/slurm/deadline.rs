//! When a run must be done: `--deadline` as a duration or a clock time, and
//! by default inside a Slurm job the job's own end time.
//!
//! Why here: the time limit is the job's, and Slurm knows it. Newer Slurm
//! exports `SLURM_JOB_END_TIME`; older (22.05, Debian 12's) does not, and
//! `squeue -o %e` gives it. A deadline is kept a margin before that end, so
//! that the run has time to gather, write its report and exit before
//! Slurm's SIGTERM.

use std::process::Command;
use std::time::Duration;

use super::SlurmContext;

/// The forms a deadline takes, for refusals.
pub const FORMS: &str = "a duration (90s, 55m, 1h30m, 2d; or Slurm's HH:MM:SS) or a local clock \
                         time (2026-12-03T04:00 or 2026-12-03T04:00:30)";

/// A deadline the command line cannot read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{0}': give {FORMS}")]
pub struct BadDeadline(pub String);

/// Seconds in `90s`, `55m`, `1h30m`, `1d12h`, `2.5s`, or Slurm's forms
/// (`MM:SS`, `HH:MM:SS`, `D-HH:MM:SS`). A bare number is refused: Slurm
/// reads it as minutes, everything else as seconds.
pub fn parse_duration(text: &str) -> Result<f64, BadDeadline> {
    let bad = || BadDeadline(text.into());
    let t = text.trim();
    if t.contains(':') || t.contains('-') {
        return super::time::parse(t).map(|s| s as f64).map_err(|_| bad());
    }
    let mut total = 0.0;
    let mut number = String::new();
    let mut units = 0;
    for c in t.chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let scale = match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => return Err(bad()),
        };
        let n: f64 = number.parse().map_err(|_| bad())?;
        total += n * scale;
        number.clear();
        units += 1;
    }
    if !number.is_empty() || units == 0 || !total.is_finite() {
        return Err(bad());
    }
    Ok(total)
}

/// `YYYY-MM-DDTHH:MM[:SS]` (or with a space) in local time, as Unix seconds.
pub fn parse_clock(text: &str) -> Option<f64> {
    let t = text.trim().replacen(' ', "T", 1);
    let (date, time) = t.split_once('T')?;
    let d: Vec<i32> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let c: Vec<i32> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let ([y, mo, da], [h, mi, rest @ ..]) = (d.as_slice(), c.as_slice()) else {
        return None;
    };
    let s = match rest {
        [] => 0,
        [s] => *s,
        _ => return None,
    };
    let in_range = (1..=12).contains(mo)
        && (1..=31).contains(da)
        && (0..24).contains(h)
        && (0..60).contains(mi)
        && (0..61).contains(&s);
    if !in_range {
        return None;
    }
    // SAFETY: `tm` is a plain C struct, zeroed then filled; `mktime` reads
    // and normalises it in place (and reads the time zone, process-wide
    // state that nismooth never changes).
    let (unix, tm) = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = y - 1900;
        tm.tm_mon = mo - 1;
        tm.tm_mday = *da;
        tm.tm_hour = *h;
        tm.tm_min = *mi;
        tm.tm_sec = s;
        tm.tm_isdst = -1;
        (libc::mktime(&mut tm), tm)
    };
    // mktime turns 31 February into 3 March: a date that moved was not one.
    let kept = tm.tm_mday == *da && tm.tm_mon == mo - 1;
    (unix != -1 && kept).then_some(unix as f64)
}

/// A `--deadline` as Unix seconds: a duration from `now`, or a clock time.
pub fn parse_deadline(text: &str, now: f64) -> Result<f64, BadDeadline> {
    parse_clock(text)
        .or_else(|| parse_duration(text).ok().map(|d| now + d))
        .ok_or_else(|| BadDeadline(text.into()))
}

/// A job's time window: when it started and when its limit ends (Unix
/// seconds), and where that came from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JobWindow {
    pub start: f64,
    pub end: f64,
    pub from: &'static str,
}

impl JobWindow {
    /// The margin to keep before the end when none is given: a minute, but
    /// never more than a tenth of the job's limit (a one-minute job keeps
    /// six seconds, not all of it).
    pub fn auto_margin(&self) -> f64 {
        (0.1 * (self.end - self.start)).clamp(0.0, 60.0)
    }
}

/// The job's window: Slurm's `SLURM_JOB_START_TIME`/`SLURM_JOB_END_TIME`,
/// else `squeue`. `None` outside a job, for a job without a limit, or when
/// `squeue` does not answer within 10 s.
pub fn job_window(ctx: &SlurmContext) -> Option<JobWindow> {
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|&t| t > 0.0)
    };
    if let (Some(start), Some(end)) = (env("SLURM_JOB_START_TIME"), env("SLURM_JOB_END_TIME")) {
        return Some(JobWindow {
            start,
            end,
            from: "SLURM_JOB_END_TIME",
        });
    }
    let id = ctx.job_id?;
    let out = output_within(
        Command::new("squeue").args(["-h", "-j", &id.to_string(), "-o", "%S %e"]),
        Duration::from_secs(10),
    )?;
    let (start, end) = out.lines().next()?.split_once(' ')?;
    Some(JobWindow {
        start: parse_clock(start)?,
        end: parse_clock(end)?,
        from: "squeue",
    })
}

/// A command's standard output, if it succeeds within `limit`.
fn output_within(cmd: &mut Command, limit: Duration) -> Option<String> {
    let out = super::output_within(cmd, limit).ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_our_units_and_slurms() {
        assert_eq!(parse_duration("90s"), Ok(90.0));
        assert_eq!(parse_duration("55m"), Ok(3300.0));
        assert_eq!(parse_duration("1h30m"), Ok(5400.0));
        assert_eq!(parse_duration("1d12h"), Ok(129600.0));
        assert_eq!(parse_duration("2.5s"), Ok(2.5));
        assert_eq!(parse_duration("01:00:00"), Ok(3600.0));
        assert_eq!(parse_duration("1-00:00:00"), Ok(86400.0));
        for bad in ["", "90", "m", "5x", "1h30", "1.2.3s", "-5m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clock_times_are_local_and_checked() {
        let a = parse_clock("2026-12-03T04:00").unwrap();
        assert_eq!(parse_clock("2026-12-03T04:00:30"), Some(a + 30.0));
        assert_eq!(parse_clock("2026-12-03 05:00"), Some(a + 3600.0));
        for bad in [
            "2026-13-03T04:00",
            "2026-12-03T25:00",
            "2026-12-03",
            "04:00",
            "x",
        ] {
            assert_eq!(parse_clock(bad), None, "{bad}");
        }
        assert_eq!(parse_deadline("10m", 100.0), Ok(700.0));
        assert_eq!(parse_deadline("2026-12-03T04:00", 0.0), Ok(a));
        assert!(parse_deadline("soon", 0.0).is_err());
    }

    #[test]
    fn the_automatic_margin_is_a_minute_or_a_tenth_of_the_limit() {
        let w = |limit| JobWindow {
            start: 1000.0,
            end: 1000.0 + limit,
            from: "test",
        };
        assert_eq!(w(60.0).auto_margin(), 6.0);
        assert_eq!(w(3600.0).auto_margin(), 60.0);
        assert_eq!(w(300.0).auto_margin(), 30.0);
    }
}
