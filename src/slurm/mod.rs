//! What Slurm tells a process through its environment, and what nismooth does
//! with it: the context recorded in reports, and a job-array task's share of
//! the image list (job-level parallelism without MPI).
//!
//! `accounting` reads a finished job from `sacct` and judges it as seff does,
//! `script` renders ready-to-submit sbatch scripts for each parallel model,
//! `array` decides how a job array covers the images (inside the cluster's
//! `MaxArraySize`), and `time` reads and writes Slurm's time limits.

pub mod accounting;
pub mod deadline;
pub mod script;
pub mod time;

use serde::{Deserialize, Serialize};

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::plan::array::ArrayError;
pub use crate::plan::array::ArraySlot;

/// The Slurm context of one process (`SLURM_*` variables), when inside a job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmContext {
    pub job_id: Option<u64>,
    pub job_name: Option<String>,
    pub partition: Option<String>,
    pub step_id: Option<String>,
    pub procid: Option<u64>,
    pub localid: Option<u64>,
    pub ntasks: Option<u64>,
    pub cpus_per_task: Option<u64>,
    pub nodename: Option<String>,
    pub nodelist: Option<String>,
    pub array_job_id: Option<u64>,
    pub array_task_id: Option<u64>,
    pub array_task_min: Option<u64>,
    pub array_task_max: Option<u64>,
    pub array_task_step: Option<u64>,
    pub array_task_count: Option<u64>,
    /// How many times Slurm has requeued or restarted this job.
    #[serde(default)]
    pub restart_count: Option<u64>,
    /// The job's memory request as its script made it: per CPU
    /// (`--mem-per-cpu`) or per node (`--mem`), in MiB. Advice is given in
    /// the same unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_per_cpu_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_per_node_mib: Option<u64>,
    /// The job's node count (`SLURM_JOB_NUM_NODES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u64>,
}

impl SlurmContext {
    /// Reads the process environment; `None` outside a Slurm job.
    pub fn from_env() -> Option<SlurmContext> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads variables through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Option<SlurmContext> {
        let num = |k: &str| get(k).and_then(|v| v.trim().parse::<u64>().ok());
        let job_id = num("SLURM_JOB_ID").or_else(|| num("SLURM_JOBID"));
        job_id?;
        Some(SlurmContext {
            job_id,
            job_name: get("SLURM_JOB_NAME"),
            partition: get("SLURM_JOB_PARTITION"),
            step_id: get("SLURM_STEP_ID").or_else(|| get("SLURM_STEPID")),
            procid: num("SLURM_PROCID"),
            localid: num("SLURM_LOCALID"),
            ntasks: num("SLURM_STEP_NUM_TASKS").or_else(|| num("SLURM_NTASKS")),
            cpus_per_task: num("SLURM_CPUS_PER_TASK"),
            nodename: get("SLURMD_NODENAME"),
            nodelist: get("SLURM_JOB_NODELIST"),
            array_job_id: num("SLURM_ARRAY_JOB_ID"),
            array_task_id: num("SLURM_ARRAY_TASK_ID"),
            array_task_min: num("SLURM_ARRAY_TASK_MIN"),
            array_task_max: num("SLURM_ARRAY_TASK_MAX"),
            array_task_step: num("SLURM_ARRAY_TASK_STEP"),
            array_task_count: num("SLURM_ARRAY_TASK_COUNT"),
            restart_count: num("SLURM_RESTART_COUNT"),
            mem_per_cpu_mib: num("SLURM_MEM_PER_CPU"),
            mem_per_node_mib: num("SLURM_MEM_PER_NODE"),
            nodes: num("SLURM_JOB_NUM_NODES").or_else(|| num("SLURM_NNODES")),
        })
    }

    /// The memory this job asked for per rank, MiB: `--mem-per-cpu` × the
    /// CPUs of a task, or `--mem` over the node's tasks. `None`: no request
    /// in the environment.
    pub fn rank_memory_mib(&self) -> Option<f64> {
        let cpus = self.cpus_per_task.unwrap_or(1).max(1) as f64;
        if let Some(per_cpu) = self.mem_per_cpu_mib {
            return Some(per_cpu as f64 * cpus);
        }
        let per_node = self.mem_per_node_mib? as f64;
        let nodes = self.nodes.unwrap_or(1).max(1) as f64;
        let tasks = self.ntasks.unwrap_or(1).max(1) as f64;
        Some(per_node / (tasks / nodes).ceil().max(1.0))
    }

    /// This array task's place among the array's tasks, from the ids Slurm gives.
    pub fn array_slot(&self) -> Result<Option<ArraySlot>, ArrayError> {
        let Some(id) = self.array_task_id else {
            return Ok(None);
        };
        ArraySlot::on_grid(
            id,
            self.array_task_min.unwrap_or(0),
            self.array_task_step.unwrap_or(1),
            self.array_task_count,
            self.array_task_max,
        )
        .map(Some)
    }
}

/// A memory size that is not in Slurm's form.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("memory '{0}': expected a size in MiB, or with M, G or T (4G, 1500M), above 0 and at most 1048576T")]
pub struct BadMemory(pub String);

/// The most memory a request may name, in MiB (1 EiB): more is a typo, and
/// its MiB count times 2^20 would not fit in a byte count.
pub const MAX_MEMORY_MIB: u64 = 1 << 40;

/// A memory size as Slurm writes it ("4G", "1500M", "512" meaning MiB) → MiB.
pub fn parse_mib(s: &str) -> Result<u64, BadMemory> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('G' | 'g') => (&s[..s.len() - 1], 1024),
        Some('T' | 't') => (&s[..s.len() - 1], 1024 * 1024),
        Some('M' | 'm') => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|v| v.checked_mul(mult))
        // 0 asks Slurm for the whole node: not what a size means here.
        .filter(|&mib| mib > 0 && mib <= MAX_MEMORY_MIB)
        .ok_or_else(|| BadMemory(s.into()))
}

/// This cluster's `MaxArraySize` from `scontrol show config`, when Slurm
/// answers; `None` off a cluster.
pub fn max_array_size() -> Option<usize> {
    let out = Command::new("scontrol")
        .args(["show", "config"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("MaxArraySize"))
        .and_then(|rest| rest.trim().trim_start_matches('=').trim().parse().ok())
}

/// Expands Slurm's filename patterns in a report path: %A (array job id),
/// %a (array task id), %j (job id), %% (a percent sign), and ours: %r (how
/// many times the job was requeued, 0 at first: a requeued job keeps its
/// id, and each attempt's report must stay apart). Outside an array,
/// %a expands to 0 and %A to the job id (or 0), so the name stays valid.
pub fn expand_pattern(path: &Path, ctx: Option<&SlurmContext>) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let job = ctx.and_then(|c| c.job_id).unwrap_or(0);
    let array_job = ctx.and_then(|c| c.array_job_id).unwrap_or(job);
    let task = ctx.and_then(|c| c.array_task_id).unwrap_or(0);
    let restart = ctx.and_then(|c| c.restart_count).unwrap_or(0);
    // Bytes, not text: a path need not be UTF-8, and `%` is one byte in any
    // encoding a path can have here.
    let bytes = path.as_os_str().as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut it = bytes.iter();
    while let Some(&b) = it.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(b'A') => out.extend(array_job.to_string().bytes()),
            Some(b'a') => out.extend(task.to_string().bytes()),
            Some(b'j') => out.extend(job.to_string().bytes()),
            Some(b'r') => out.extend(restart.to_string().bytes()),
            Some(b'%') => out.push(b'%'),
            Some(&other) => out.extend([b'%', other]),
            None => out.push(b'%'),
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Runs `cmd` and collects what it prints, giving up (and killing it) after
/// `limit`: a Slurm command stuck on a controller that does not answer
/// must not hold nismooth forever. Its output is read as it comes, so a
/// long answer (an array's thousand lines) never fills the pipe and stalls.
pub fn output_within(
    cmd: &mut Command,
    limit: std::time::Duration,
) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let until = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", limit.as_secs_f64()),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Ok(std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ctx(vars: &[(&str, &str)]) -> Option<SlurmContext> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SlurmContext::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn context_needs_a_job_and_reads_the_step() {
        assert!(ctx(&[("SLURM_PROCID", "1")]).is_none());
        let c = ctx(&[
            ("SLURM_JOB_ID", "42"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "3"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_STEP_NUM_TASKS", "4"),
            ("SLURM_CPUS_PER_TASK", "2"),
            ("SLURMD_NODENAME", "node2"),
        ])
        .unwrap();
        assert_eq!(
            (c.job_id, c.procid, c.localid, c.ntasks),
            (Some(42), Some(3), Some(1), Some(4))
        );
        assert_eq!(c.nodename.as_deref(), Some("node2"));
        assert_eq!(c.array_slot().unwrap(), None);
    }

    #[test]
    fn array_slots_follow_min_step_count() {
        let c = ctx(&[
            ("SLURM_JOB_ID", "7"),
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "9"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "5"),
        ])
        .unwrap();
        let slot = c.array_slot().unwrap().unwrap();
        assert_eq!((slot.position, slot.count), (2, 5));
        let off_grid = ctx(&[
            ("SLURM_JOB_ID", "7"),
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "5"),
        ])
        .unwrap();
        assert!(off_grid.array_slot().is_err());
    }

    #[test]
    fn uneven_ids_have_no_share() {
        // --array=0,3,4,6: min 0, max 6, four tasks; no step spaces them.
        let ctx = |id| SlurmContext {
            array_task_id: Some(id),
            array_task_min: Some(0),
            array_task_max: Some(6),
            array_task_count: Some(4),
            ..Default::default()
        };
        for id in [0, 3, 4, 6] {
            let err = ctx(id).array_slot().unwrap_err().to_string();
            assert!(err.contains("not evenly spaced"), "{id}: {err}");
        }
        let even = SlurmContext {
            array_task_max: Some(3),
            ..ctx(2)
        };
        assert_eq!(even.array_slot().unwrap().unwrap().position, 2);
    }

    #[test]
    fn memory_sizes_parse_like_slurm() {
        assert_eq!(parse_mib("4G"), Ok(4096));
        assert_eq!(parse_mib(" 1500M"), Ok(1500));
        assert_eq!(parse_mib("512"), Ok(512));
        assert!(parse_mib("lots").is_err());
    }

    #[test]
    fn patterns_expand_like_slurm() {
        let c = ctx(&[
            ("SLURM_JOB_ID", "100"),
            ("SLURM_ARRAY_JOB_ID", "99"),
            ("SLURM_ARRAY_TASK_ID", "3"),
        ]);
        assert_eq!(
            expand_pattern(Path::new("r-%A_%a-%j-100%%.json"), c.as_ref()),
            Path::new("r-99_3-100-100%.json")
        );
        assert_eq!(
            expand_pattern(Path::new("r-%a.json"), None),
            Path::new("r-0.json")
        );
        assert_eq!(expand_pattern(Path::new("odd%x"), None), Path::new("odd%x"));
    }
}
