//! seff-style verdicts on a report: what `seff` users read after a job,
//! beside what the table already shows (CPU efficiency and load balance
//! are in the table and are not repeated here).

use super::Report;

/// The report's peak memory per rank against a request of `request_mib`
/// per rank, with plain advice when it is over the request or far under.
pub fn memory_line(r: &Report, request_mib: u64) -> String {
    let peak_mib = crate::metrics::mib(r.summary.peak_rss_bytes as f64);
    let req = request_mib as f64;
    let advice = if peak_mib > req {
        ": over the request, the job would be killed"
    } else if peak_mib < 0.25 * req {
        ": ask for less"
    } else {
        ""
    };
    format!(
        "  seff: memory efficiency {:.1}% ({peak_mib:.1} MiB peak of {request_mib} MiB requested per rank){advice}\n",
        100.0 * peak_mib / req.max(1.0),
    )
}
