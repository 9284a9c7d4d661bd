//! seff-style verdicts on a report: what `seff` users read after a job,
//! beside what the table already shows (CPU efficiency and load balance
//! are in the table and are not repeated here).

use super::Report;

/// What a measured peak says of a memory request: the one rule behind
/// `report FILE --mem-request` and `report --job`'s advice.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MemoryVerdict {
    /// The peak is over the request: the job would be killed.
    Over,
    /// Less than half the request was used and `ask_mib` (the peak + 25%,
    /// in 64 MiB steps, at least 256 MiB) is less than asked.
    AskLess { ask_mib: f64 },
    /// The request suits the peak.
    Fits,
}

/// The verdict on a request of `request_mib` for a peak of `peak_mib`
/// (per rank or per node, the two alike).
pub fn memory_verdict(peak_mib: f64, request_mib: f64) -> MemoryVerdict {
    let ask_mib = ((peak_mib * 1.25 / 64.0).ceil() * 64.0).max(256.0);
    if peak_mib > request_mib {
        MemoryVerdict::Over
    } else if peak_mib > 0.0 && peak_mib < 0.5 * request_mib && ask_mib < request_mib {
        MemoryVerdict::AskLess { ask_mib }
    } else {
        MemoryVerdict::Fits
    }
}

/// The report's peak memory per rank against a request of `request_mib`
/// per rank, with plain advice when it is over the request or far under.
pub fn memory_line(r: &Report, request_mib: u64) -> String {
    let peak_mib = crate::metrics::mib(r.summary.peak_rss_bytes as f64);
    let req = request_mib as f64;
    let advice = match memory_verdict(peak_mib, req) {
        MemoryVerdict::Over => ": over the request, the job would be killed".to_string(),
        MemoryVerdict::AskLess { ask_mib } => {
            format!(": ask for less, {ask_mib:.0} MiB would do (the peak + 25%)")
        }
        MemoryVerdict::Fits => String::new(),
    };
    format!(
        "  seff: memory efficiency {:.1}% ({peak_mib:.1} MiB peak of {request_mib} MiB requested per rank){advice}\n",
        100.0 * peak_mib / req.max(1.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_says_over_less_or_fits() {
        assert_eq!(memory_verdict(300.0, 256.0), MemoryVerdict::Over);
        // 100 MiB of 1024: the peak + 25% is 125, but never under 256.
        assert_eq!(
            memory_verdict(100.0, 1024.0),
            MemoryVerdict::AskLess { ask_mib: 256.0 }
        );
        // 1000 of 4096: 1250 rounds up to 1280.
        assert_eq!(
            memory_verdict(1000.0, 4096.0),
            MemoryVerdict::AskLess { ask_mib: 1280.0 }
        );
        // Half used or more, or nothing to gain, or no peak known: fits.
        assert_eq!(memory_verdict(600.0, 1024.0), MemoryVerdict::Fits);
        assert_eq!(memory_verdict(120.0, 256.0), MemoryVerdict::Fits);
        assert_eq!(memory_verdict(0.0, 1024.0), MemoryVerdict::Fits);
    }
}
