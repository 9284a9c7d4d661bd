//! Slurm's time limits, read and written as `sbatch --time` takes them.
//!
//! Why: a job script whose `--time` Slurm cannot read is rejected at
//! submission (or, worse, read as minutes where hours were meant), so the
//! forms are checked when the script is written, with the accepted ones
//! listed in the refusal.

/// A time limit Slurm would not read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "time '{0}': Slurm reads MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS \
     (e.g. 90, 01:30:00, 1-12:00:00)"
)]
pub struct BadTime(pub String);

/// The seconds of a Slurm time limit: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`,
/// `D-HH:MM`, `D-HH:MM:SS` (each part a number; minutes, seconds and, after a
/// day, hours within their range). Zero is refused: a limit of nothing.
pub fn parse(text: &str) -> Result<u64, BadTime> {
    let bad = || BadTime(text.into());
    let num = |s: &str| -> Result<u64, BadTime> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 9 {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (days, rest) = match text.split_once('-') {
        Some((d, rest)) => (Some(num(d)?), rest),
        None => (None, text),
    };
    let parts: Vec<u64> = rest.split(':').map(num).collect::<Result<_, _>>()?;
    let (h, m, s) = match (days.is_some(), parts.as_slice()) {
        (false, [m]) => (0, *m, 0),
        (false, [m, s]) => (0, *m, *s),
        (false, [h, m, s]) => (*h, *m, *s),
        (true, [h]) => (*h, 0, 0),
        (true, [h, m]) => (*h, *m, 0),
        (true, [h, m, s]) => (*h, *m, *s),
        _ => return Err(bad()),
    };
    // Minutes are bounded only below hours (MM and MM:SS take any count).
    let hours_given = days.is_some() || parts.len() == 3;
    let in_range = s < 60 && (!hours_given || m < 60);
    let hours_ok = days.is_none() || h < 24;
    let total = days.unwrap_or(0) * 86400 + h * 3600 + m * 60 + s;
    if !in_range || !hours_ok || total == 0 {
        return Err(bad());
    }
    Ok(total)
}

/// `seconds` as Slurm writes a limit, rounded up to whole minutes, at
/// least one: `HH:MM:00`, or `D-HH:MM:00` from a day on.
pub fn format(seconds: f64) -> String {
    let mins = (seconds / 60.0).ceil().max(1.0) as u64;
    let (d, h, m) = (mins / 1440, (mins % 1440) / 60, mins % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:00")
    } else {
        format!("{h:02}:{m:02}:00")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_form_slurm_reads() {
        for (text, secs) in [
            ("90", 5400),
            ("5:30", 330),
            ("90:00", 5400),
            ("01:30:00", 5400),
            ("2-0", 172800),
            ("1-12", 129600),
            ("1-12:30", 131400),
            ("1-00:00:01", 86401),
            ("0:0:1", 1),
        ] {
            assert_eq!(parse(text), Ok(secs), "{text}");
        }
    }

    #[test]
    fn refuses_what_slurm_would_not_read() {
        for text in [
            "90min",
            "1h",
            "",
            "0",
            "00:00:00",
            "1:60",
            "1:60:00",
            "1:2:3:4",
            "-1",
            "1-",
            "1-24",
            "1-1:60",
            "1.5",
            " 90",
            "abc",
            "99999999999",
        ] {
            assert_eq!(parse(text), Err(BadTime(text.into())), "{text:?}");
        }
    }

    #[test]
    fn writes_whole_minutes() {
        assert_eq!(format(59.0), "00:01:00");
        assert_eq!(format(3601.0), "01:01:00");
        assert_eq!(format(90000.0), "1-01:00:00");
        for s in [1.0, 59.0, 3601.0, 90000.0, 1e6] {
            assert!(parse(&format(s)).unwrap() as f64 >= s);
        }
    }
}
