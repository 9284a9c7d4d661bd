//! Slurm's own accounting of a job (`sacct`), and the seff-style verdicts
//! a user reads after it: CPU, memory and time against what was asked.
//!
//! Why: nismooth's report measures the process; Slurm's accounting measures
//! the allocation (the cgroup's high-water mark, the CPUs and the time that
//! were reserved). The request is judged against the second, so both are
//! shown side by side. Memory is judged per node: a step's MaxRSS is its
//! largest task's, so a node's use is MaxRSS × the tasks on that node (an
//! upper bound), against the request per node; counting MaxRSS once per job
//! (as reportseff does) understates a multi-task step.

use std::process::Command;

/// The fields asked of `sacct -P`, in order.
pub const FIELDS: &str =
    "JobID,JobName,State,ExitCode,Elapsed,Timelimit,TotalCPU,MaxRSS,ReqMem,AllocCPUS,NNodes,NTasks,WorkDir,Start,End";

/// One line of `sacct`: a job, an array task, or one of their steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub state: String,
    pub exit_code: String,
    pub elapsed_s: f64,
    /// `None`: UNLIMITED (or not set on a step line).
    pub timelimit_s: Option<f64>,
    pub total_cpu_s: f64,
    pub max_rss_bytes: Option<u64>,
    /// The memory request per node: sacct's ReqMem, which is the job's
    /// total in Slurm ≥ 21.08, or per node (`n`) or per CPU (`c`) before.
    pub req_mem_per_node_bytes: Option<u64>,
    pub alloc_cpus: usize,
    pub nodes: usize,
    pub tasks: Option<usize>,
    pub workdir: String,
    /// Start and end as seconds on the cluster's local clock (sacct's
    /// `2026-12-07T15:01:02`); only differences between them mean anything.
    /// `None`: not started, or still running.
    pub start_s: Option<f64>,
    pub end_s: Option<f64>,
}

/// How long `sacct` may take: slurmdbd answers in well under a second;
/// one that does not answer in a minute will not. `NISMOOTH_SACCT_TIMEOUT`
/// (seconds) sets another limit.
fn sacct_limit() -> std::time::Duration {
    let secs = std::env::var("NISMOOTH_SACCT_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(60.0);
    std::time::Duration::from_secs_f64(secs.min(86400.0))
}

/// Why accounting could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AccountingError {
    #[error("cannot run sacct: {0}")]
    Start(std::io::Error),
    #[error("sacct -j {job}: {message}")]
    Sacct { job: String, message: String },
    #[error("sacct knows no job {0} (is accounting on, and the job finished?)")]
    NoJob(String),
    /// Not one job id (`123`) or array task (`123_4`).
    #[error("--job '{0}': give one job id (123) or one array task (123_4)")]
    BadJobId(String),
}

/// `sacct -j JOB`'s records, the job's and its steps' (and an array's
/// tasks'), every attempt of a requeued job among them (`--duplicates`:
/// without it sacct shows only the last).
pub fn query(job: &str) -> Result<Vec<Record>, AccountingError> {
    // One job (`123`) or one array task (`123_4`): sacct reads `1,2` as
    // two jobs and the shell `1;x` as two commands, and `''` as none.
    let (base, task) = job.split_once('_').unwrap_or((job, "0"));
    let number = |s: &str| !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit());
    if !number(base) || !number(task) {
        return Err(AccountingError::BadJobId(job.into()));
    }
    let out = super::output_within(
        Command::new("sacct").args(["-j", job, "--duplicates", "-P", "-n", "-o", FIELDS]),
        sacct_limit(),
    )
    .map_err(AccountingError::Start)?;
    if !out.status.success() {
        return Err(AccountingError::Sacct {
            job: job.into(),
            message: String::from_utf8_lossy(&out.stderr).trim().into(),
        });
    }
    let records = parse(&String::from_utf8_lossy(&out.stdout));
    if jobs(&records).is_empty() {
        return Err(AccountingError::NoJob(job.into()));
    }
    Ok(records)
}

/// Lines of `sacct -P -n -o FIELDS`; lines of another shape are skipped.
pub fn parse(text: &str) -> Vec<Record> {
    text.lines().filter_map(record).collect()
}

fn record(line: &str) -> Option<Record> {
    let f: Vec<&str> = line.split('|').collect();
    let [id, name, state, exit_code, elapsed, limit, cpu, rss, req, cpus, nodes, tasks, workdir, start, end] =
        f.as_slice()
    else {
        return None;
    };
    Some(Record {
        id: id.to_string(),
        name: name.to_string(),
        state: state.split_whitespace().next().unwrap_or("").into(),
        exit_code: exit_code.to_string(),
        elapsed_s: duration(elapsed)?,
        timelimit_s: duration(limit),
        total_cpu_s: duration(cpu).unwrap_or(0.0),
        max_rss_bytes: size(rss),
        req_mem_per_node_bytes: request_per_node(
            req,
            cpus.parse().unwrap_or(0),
            nodes.parse().unwrap_or(1),
        ),
        alloc_cpus: cpus.parse().unwrap_or(0),
        nodes: nodes.parse().unwrap_or(1),
        tasks: tasks.parse().ok(),
        workdir: workdir.to_string(),
        start_s: clock(start),
        end_s: clock(end),
    })
}

/// `YYYY-MM-DDTHH:MM:SS` as seconds since 1970-01-01 on the same clock
/// (days from the civil date, as in Howard Hinnant's `days_from_civil`);
/// `Unknown`, `None` and anything else: `None`.
fn clock(t: &str) -> Option<f64> {
    let (date, time) = t.split_once('T')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [y, m, day] = d.as_slice() else {
        return None;
    };
    if !(1..=12).contains(m) || !(1..=31).contains(day) {
        return None;
    }
    let y = if *m <= 2 { y - 1 } else { *y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days as f64 * 86400.0 + duration(time)?)
}

/// `[D-]HH:MM:SS`, `MM:SS` or `MM:SS.mmm` as seconds; `None` otherwise.
fn duration(t: &str) -> Option<f64> {
    let (days, rest) = match t.split_once('-') {
        Some((d, rest)) => (d.parse::<f64>().ok()?, rest),
        None => (0.0, t),
    };
    let parts: Vec<f64> = rest
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (h, m, s) = match parts.as_slice() {
        [m, s] => (0.0, *m, *s),
        [h, m, s] => (*h, *m, *s),
        _ => return None,
    };
    Some(days * 86400.0 + h * 3600.0 + m * 60.0 + s)
}

/// `104412K`, `256M`, `2G` (sacct's units, powers of 1024) as bytes.
fn size(text: &str) -> Option<u64> {
    let t = text.trim_end_matches(['n', 'c']);
    let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let scale: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    Some((num.parse::<f64>().ok()? * scale as f64) as u64)
}

/// ReqMem per node: `4Gn` per node, `1000Mc` per CPU (older Slurm), a
/// bare size the job's total (Slurm ≥ 21.08: its TRES memory).
fn request_per_node(text: &str, cpus: usize, nodes: usize) -> Option<u64> {
    let bytes = size(text)?;
    let nodes = nodes.max(1) as u64;
    Some(match text.chars().last() {
        Some('n') => bytes,
        Some('c') => bytes.saturating_mul(cpus as u64) / nodes,
        _ => bytes / nodes,
    })
}

/// A job (or one array task) and its steps.
#[derive(Clone, Debug)]
pub struct Job {
    pub record: Record,
    pub steps: Vec<Record>,
}

/// Records grouped by job: each step (`ID.step`) under its job (`ID`),
/// the latest line of that id before it (sacct lists each attempt of a
/// requeued job, then its steps).
pub fn jobs(records: &[Record]) -> Vec<Job> {
    let mut jobs: Vec<Job> = Vec::new();
    for r in records {
        match r.id.split_once('.') {
            None => jobs.push(Job {
                record: r.clone(),
                steps: Vec::new(),
            }),
            Some((job, _)) => {
                if let Some(j) = jobs.iter_mut().rev().find(|j| j.record.id == job) {
                    j.steps.push(r.clone());
                }
            }
        }
    }
    jobs
}

/// One job or array task over its attempts: Slurm runs a requeued job
/// again under the same id, and sacct keeps a line for each run.
#[derive(Clone, Debug)]
pub struct Attempts {
    pub id: String,
    /// Oldest first.
    pub runs: Vec<Job>,
}

impl Attempts {
    pub fn last(&self) -> &Job {
        self.runs.last().expect("at least one attempt")
    }

    /// Whether this is one task of an array (`123_4`).
    pub fn is_array_task(&self) -> bool {
        self.id.contains('_')
    }
}

/// Jobs grouped by id, each id's attempts in the order they started
/// (one not started yet last), ids in the order sacct gave them.
pub fn attempts(jobs: Vec<Job>) -> Vec<Attempts> {
    let mut out: Vec<Attempts> = Vec::new();
    for j in jobs {
        match out.iter_mut().find(|a| a.id == j.record.id) {
            Some(a) => a.runs.push(j),
            None => out.push(Attempts {
                id: j.record.id.clone(),
                runs: vec![j],
            }),
        }
    }
    for a in &mut out {
        a.runs.sort_by(|x, y| {
            x.record
                .start_s
                .unwrap_or(f64::MAX)
                .total_cmp(&y.record.start_s.unwrap_or(f64::MAX))
        });
    }
    out
}

/// The verdicts on one job, as fractions (1.0 = all of it used).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seff {
    /// CPU time over elapsed × allocated CPUs, at most 1 (cgroups hold a
    /// job to its CPUs; a larger ratio is rounding in short jobs). None when
    /// sacct gives no allocated CPUs or no elapsed time (a job that never ran).
    pub cpu: Option<f64>,
    /// The largest node's use: MaxRSS × that step's tasks per node.
    pub memory_per_node_bytes: Option<u64>,
    /// That use over the request per node.
    pub memory: Option<f64>,
    /// Elapsed over the time limit.
    pub time: Option<f64>,
}

impl Job {
    pub fn seff(&self) -> Seff {
        let r = &self.record;
        let capacity = r.elapsed_s * r.alloc_cpus as f64;
        let cpu = (capacity > 0.0).then(|| (r.total_cpu_s / capacity).min(1.0));
        let memory_per_node_bytes = self
            .steps
            .iter()
            .filter_map(|s| {
                let per_node = s.tasks.unwrap_or(1).div_ceil(s.nodes.max(1)).max(1) as u64;
                // 0: the step ended before the first sample (short jobs).
                Some(s.max_rss_bytes.filter(|&b| b > 0)? * per_node)
            })
            .max();
        let request_per_node = r.req_mem_per_node_bytes;
        let memory = match (memory_per_node_bytes, request_per_node) {
            (Some(used), Some(req)) if req > 0 => Some(used as f64 / req as f64),
            _ => None,
        };
        let time = r.timelimit_s.filter(|&l| l > 0.0).map(|l| r.elapsed_s / l);
        Seff {
            cpu,
            memory_per_node_bytes,
            memory,
            time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What this project's test cluster printed for an estimated job and a
    /// two-node MPI job (two tasks per node on the step).
    const SACCT: &str = "\
4|nismooth|COMPLETED|0:0|00:00:02|00:01:00|00:01.877||256M|1|1||/tmp/w|2026-12-07T15:00:00|2026-12-07T15:00:02
4.batch|batch|COMPLETED|0:0|00:00:02||00:01.877|104628K||1|1|1||2026-12-07T15:00:00|2026-12-07T15:00:02
9|mpi|COMPLETED|0:0|00:01:40|00:10:00|05:20.000||4G|4|2||/tmp/m|2026-12-07T15:00:00|2026-12-07T15:00:02
9.batch|batch|COMPLETED|0:0|00:01:40||00:00.100|5000K||2|1|1||2026-12-07T15:00:00|2026-12-07T15:00:02
9.0|nismooth|COMPLETED|0:0|00:01:39||05:19.900|300M||4|2|4||2026-12-07T15:00:00|2026-12-07T15:00:02
12_3|array.sh|OUT_OF_MEMORY|0:125|00:00:01|UNLIMITED|00:00.174||36M|1|1||/tmp/a|2026-12-07T15:00:00|2026-12-07T15:00:02
12_3.batch|batch|OUT_OF_MEMORY|0:125|00:00:01||00:00.174|0||1|1|1||2026-12-07T15:00:00|2026-12-07T15:00:02
";

    #[test]
    fn reads_sacct_and_judges_like_seff() {
        let records = parse(SACCT);
        assert_eq!(records.len(), 7);
        let jobs = jobs(&records);
        assert_eq!(jobs.len(), 3);
        let one = jobs[0].seff();
        assert_eq!(one.memory_per_node_bytes, Some(104628 * 1024));
        assert!((one.memory.unwrap() - 104628.0 / (256.0 * 1024.0)).abs() < 1e-9);
        assert!((one.time.unwrap() - 2.0 / 60.0).abs() < 1e-9);
        assert!((one.cpu.unwrap() - 1.877 / 2.0).abs() < 1e-9);
        // Two tasks per node on the MPI step: the node holds 2 × 300 MiB of its 2 GiB.
        let mpi = jobs[1].seff();
        assert_eq!(mpi.memory_per_node_bytes, Some(600 << 20));
        assert!((mpi.memory.unwrap() - 600.0 / 2048.0).abs() < 1e-9);
        assert_eq!(request_per_node("4Gn", 16, 2), Some(4 << 30));
        assert_eq!(request_per_node("1000Mc", 16, 2), Some(8000 << 20));
        assert_eq!(request_per_node("4G", 16, 2), Some(2 << 30));
        assert!((mpi.cpu.unwrap() - 320.0 / 400.0).abs() < 1e-9);
        // A job that never ran: no CPUs allocated, no efficiency (not 100%).
        let never = Job {
            record: Record {
                alloc_cpus: 0,
                elapsed_s: 0.0,
                ..jobs[0].record.clone()
            },
            steps: Vec::new(),
        };
        assert_eq!(never.seff().cpu, None);
        let oom = &jobs[2];
        assert_eq!(oom.record.state, "OUT_OF_MEMORY");
        assert_eq!(oom.seff().time, None, "UNLIMITED");
        assert_eq!(
            oom.seff().memory_per_node_bytes,
            None,
            "MaxRSS 0: not sampled"
        );
    }

    #[test]
    fn odd_values_do_not_panic() {
        for line in [
            "",
            "a|b",
            "1|x|RUNNING|0:0|bad|x|x|x|x|x|x|x|x",
            "1|x|CANCELLED by 0|0:0|1-02:03:04|INVALID|||||||",
        ] {
            let _ = parse(line).first().map(|r| {
                Job {
                    record: r.clone(),
                    steps: vec![],
                }
                .seff()
            });
        }
        assert_eq!(duration("1-02:03:04"), Some(93784.0));
        assert_eq!(size("2G"), Some(2 << 30));
        assert_eq!(size("512Mn"), Some(512 << 20));
        assert_eq!(clock("1970-01-02T00:00:01"), Some(86401.0));
        assert_eq!(clock("2000-03-01T00:00:00"), Some(951868800.0));
        assert_eq!(clock("Unknown"), None);
        assert_eq!(clock("2026-13-01T00:00:00"), None);
    }

    /// A job requeued twice (sacct --duplicates: each attempt, then its
    /// steps) and an array of two tasks.
    #[test]
    fn groups_the_attempts_of_a_requeued_job_and_an_array_s_tasks() {
        let text = "\
6|job.sh|REQUEUED|0:0|00:00:10|00:01:00|00:05.000||256M|2|1||/w|2026-12-07T15:00:00|2026-12-07T15:00:10
6.batch|batch|FAILED|3:0|00:00:10||00:05.000|90M||2|1|1||2026-12-07T15:00:00|2026-12-07T15:00:10
6|job.sh|COMPLETED|0:0|00:00:20|00:01:00|00:15.000||256M|2|1||/w|2026-12-07T15:00:30|2026-12-07T15:00:50
6.batch|batch|COMPLETED|0:0|00:00:20||00:15.000|100M||2|1|1||2026-12-07T15:00:30|2026-12-07T15:00:50
7_0|a.sh|COMPLETED|0:0|00:00:04|00:01:00|00:03.000||256M|1|1||/w|2026-12-07T15:01:00|2026-12-07T15:01:04
7_1|a.sh|COMPLETED|0:0|00:00:04|00:01:00|00:03.000||256M|1|1||/w|2026-12-07T15:01:04|2026-12-07T15:01:08
";
        let all = attempts(jobs(&parse(text)));
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].runs.len(), 2);
        assert_eq!(all[0].runs[0].record.state, "REQUEUED");
        assert_eq!(
            all[0].runs[0].steps[0].exit_code, "3:0",
            "steps stay with their attempt"
        );
        assert_eq!(all[0].last().steps[0].max_rss_bytes, Some(100 << 20));
        assert!(all[1].is_array_task() && !all[0].is_array_task());
        assert_eq!(
            all[2].last().record.end_s.unwrap() - all[1].last().record.start_s.unwrap(),
            8.0
        );
    }
}
