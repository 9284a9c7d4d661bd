//! Ready-to-submit sbatch scripts, one shape per parallel model.
//!
//! The resource request follows the model: one task for serial and threads;
//! nodes × tasks-per-node ranks started by `srun --mpi=pmix` for MPI, GPU and
//! hybrid; an array of single-task jobs for job-level parallelism. Output
//! files use `%x-%j` (`%x-%A_%a` for arrays), and every script times the run
//! in the manner of `\time` (wall, user, sys, CPU%, max RSS);
//! nismooth's own report adds per-rank CPU efficiency and peak memory.

use std::fmt::Write;

use serde::Serialize;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// One task, one CPU.
    Serial,
    /// One task, several filter threads (shared memory).
    Threads,
    /// MPI ranks across nodes, one CPU each (distributed memory).
    Mpi,
    /// A job array: independent single-task jobs, each taking its share of the list.
    Array,
    /// One MPI rank per GPU, the filter on the GPU.
    Gpu,
    /// MPI ranks across nodes, several threads each.
    Hybrid,
}

crate::choice::named_choices!(Model {
    Serial => "serial": "One task, one CPU",
    Threads => "threads": "One task, several filter threads (shared memory)",
    Mpi => "mpi": "MPI ranks across nodes, one CPU each (distributed memory)",
    Array => "array": "A job array: independent single-task jobs, each taking its share of the list",
    Gpu => "gpu": "One MPI rank per GPU, the filter on the GPU",
    Hybrid => "hybrid": "MPI ranks across nodes, several threads each",
});

impl Model {
    /// Whether srun starts the run's ranks (the MPI models).
    pub fn uses_srun(self) -> bool {
        matches!(self, Model::Mpi | Model::Gpu | Model::Hybrid)
    }
}

/// Memory request: per node (`--mem`) or per allocated CPU (`--mem-per-cpu`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Memory {
    PerNode { mib: u64 },
    PerCpu { mib: u64 },
}

impl Memory {
    /// The request for ranks of `rank_mib` each on `cpus` CPUs, in the form
    /// the model needs: per CPU where srun starts ranks (so it follows the
    /// ranks a node gets), per node for one task.
    pub fn for_ranks(model: Model, rank_mib: f64, cpus: usize) -> Memory {
        match model {
            Model::Mpi | Model::Hybrid | Model::Gpu => Memory::PerCpu {
                mib: per_cpu_mib(rank_mib, cpus),
            },
            Model::Serial | Model::Threads | Model::Array => Memory::PerNode {
                mib: round_request(rank_mib),
            },
        }
    }
}

impl Memory {
    /// What one task of `cpus` CPUs is given, MiB.
    pub fn per_task_mib(self, cpus: usize) -> u64 {
        match self {
            Memory::PerNode { mib } => mib,
            Memory::PerCpu { mib } => mib.saturating_mul(cpus as u64),
        }
    }

    /// The request as sbatch takes it: `--mem=…` or `--mem-per-cpu=…`.
    pub fn option(self) -> String {
        match self {
            Memory::PerNode { mib } => format!("--mem={}", slurm_size(mib)),
            Memory::PerCpu { mib } => format!("--mem-per-cpu={}", slurm_size(mib)),
        }
    }
}

/// Memory asked when nothing better is known: no input header could be read.
pub const DEFAULT_MEMORY_MIB: u64 = 2048;

/// `--mem-per-cpu` for ranks of `rank_mib` on `cpus` CPUs each.
pub fn per_cpu_mib(rank_mib: f64, cpus: usize) -> u64 {
    round_request(rank_mib / cpus.max(1) as f64)
}

/// The one rounding rule of every request: up to 64 MiB, at least 256 MiB.
fn round_request(mib: f64) -> u64 {
    ((mib / 64.0).ceil() * 64.0).max(256.0) as u64
}

/// Everything a script needs; `JobSpec::shape` fills in what the model fixes.
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub model: Model,
    pub job_name: String,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub constraint: Option<String>,
    pub mail_type: Option<String>,
    pub mail_user: Option<String>,
    /// `module load` lines, then shell lines as written, before the run.
    pub modules: Vec<String>,
    pub setup: Vec<String>,
    /// Slurm time format, e.g. `00:30:00` or `1-00:00:00`.
    pub time: String,
    pub nodes: usize,
    pub ntasks_per_node: usize,
    pub cpus_per_task: usize,
    pub memory: Memory,
    pub gpus_per_node: usize,
    /// Array tasks and how many may run at once (`%L`).
    pub array_tasks: usize,
    pub array_limit: Option<usize>,
    pub array_chunk: Option<usize>,
    /// The nismooth binary the job runs (absolute, so the script runs anywhere).
    pub binary: String,
    /// Arguments of `nismooth run` (inputs, -o OUTDIR, options).
    pub run_args: Vec<String>,
    /// Why the memory and time are what they are (written as comments).
    pub notes: Vec<String>,
    /// Drain before the time limit and requeue (`nismooth sbatch --requeue`).
    pub requeue: Option<Requeue>,
}

/// A job that requeues itself when its time runs out before its images.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Requeue {
    /// Requeues at most (`SLURM_RESTART_COUNT` counts them).
    pub max: usize,
    /// Seconds before the limit that Slurm signals the script.
    pub lead_s: usize,
}

impl JobSpec {
    /// A job of one task on one CPU running `binary run RUN_ARGS`, for an
    /// hour with 2 GiB: the fields a caller does not set.
    pub fn new(model: Model, binary: String, run_args: Vec<String>) -> JobSpec {
        JobSpec {
            model,
            job_name: "nismooth".into(),
            partition: None,
            account: None,
            qos: None,
            constraint: None,
            mail_type: None,
            mail_user: None,
            modules: Vec::new(),
            setup: Vec::new(),
            time: "01:00:00".into(),
            nodes: 1,
            ntasks_per_node: 1,
            cpus_per_task: 1,
            memory: Memory::PerNode {
                mib: DEFAULT_MEMORY_MIB,
            },
            gpus_per_node: 0,
            array_tasks: 1,
            array_limit: None,
            array_chunk: None,
            binary,
            run_args,
            notes: Vec::new(),
            requeue: None,
        }
    }

    /// Applies what the model fixes: one task for serial/threads/array, one
    /// CPU per rank for MPI, a rank per GPU.
    pub fn shape(mut self) -> JobSpec {
        match self.model {
            Model::Serial => {
                (self.nodes, self.ntasks_per_node, self.cpus_per_task) = (1, 1, 1);
            }
            Model::Threads => (self.nodes, self.ntasks_per_node) = (1, 1),
            Model::Array => (self.nodes, self.ntasks_per_node) = (1, 1),
            Model::Mpi => self.cpus_per_task = 1,
            Model::Gpu => {
                self.gpus_per_node = self.gpus_per_node.max(1);
                self.ntasks_per_node = self.gpus_per_node;
            }
            Model::Hybrid => {}
        }
        self
    }

    fn ranks(&self) -> usize {
        self.nodes * self.ntasks_per_node
    }
}

/// MiB as Slurm writes a size: whole GiB as `G`, else `M`.
fn slurm_size(m: u64) -> String {
    if m.is_multiple_of(1024) {
        format!("{}G", m / 1024)
    } else {
        format!("{m}M")
    }
}

/// Quotes one argument for bash (single quotes, embedded quotes escaped).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+%@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn describe(s: &JobSpec) -> String {
    match s.model {
        Model::Serial => "serial: one task on one CPU".into(),
        Model::Threads => format!("shared-memory threads: one task, {} threads", s.cpus_per_task),
        Model::Mpi => format!(
            "distributed memory: {} node(s) × {} MPI rank(s), one CPU each",
            s.nodes, s.ntasks_per_node
        ),
        Model::Array => format!(
            "job array: {} independent task(s){}, each on {} CPU(s), each taking its share of the list",
            s.array_tasks,
            s.array_limit.map(|l| format!(" ({l} at a time)")).unwrap_or_default(),
            s.cpus_per_task
        ),
        Model::Gpu => format!(
            "GPU offload: {} node(s) × {} rank(s), one GPU per rank",
            s.nodes, s.ntasks_per_node
        ),
        Model::Hybrid => format!(
            "hybrid MPI + threads: {} node(s) × {} rank(s) × {} thread(s)",
            s.nodes, s.ntasks_per_node, s.cpus_per_task
        ),
    }
}

/// The sbatch script for `spec` (call `shape` first).
pub fn render(spec: &JobSpec) -> String {
    [
        requests(spec),
        preamble(spec),
        run_line(spec),
        afterword(spec),
    ]
    .concat()
}

/// The shebang, what the job is and why, and its `#SBATCH` requests.
fn requests(s: &JobSpec) -> String {
    let mut o = String::new();
    let sb = |o: &mut String, line: String| {
        let _ = writeln!(o, "#SBATCH {line}");
    };
    let _ = writeln!(o, "#!/bin/bash");
    let _ = writeln!(o, "# nismooth, {}.", describe(s));
    let _ = writeln!(
        o,
        "# Generated by `nismooth sbatch --model {}` (nismooth {}). Submit: sbatch THIS_FILE",
        serde_json::to_value(s.model)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        env!("CARGO_PKG_VERSION")
    );
    for n in &s.notes {
        let _ = writeln!(o, "# {n}");
    }
    sb(&mut o, format!("--job-name={}", shell_quote(&s.job_name)));
    let optional = [
        ("partition", &s.partition),
        ("account", &s.account),
        ("qos", &s.qos),
        ("constraint", &s.constraint),
        ("mail-type", &s.mail_type),
        ("mail-user", &s.mail_user),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            sb(&mut o, format!("--{name}={}", shell_quote(v)));
        }
    }
    sb(&mut o, format!("--nodes={}", s.nodes));
    sb(&mut o, format!("--ntasks-per-node={}", s.ntasks_per_node));
    sb(&mut o, format!("--cpus-per-task={}", s.cpus_per_task));
    sb(&mut o, s.memory.option());
    if s.model == Model::Gpu {
        sb(&mut o, format!("--gres=gpu:{}", s.gpus_per_node));
    }
    sb(&mut o, format!("--time={}", s.time));
    if s.model == Model::Array {
        let limit = s.array_limit.map(|l| format!("%{l}")).unwrap_or_default();
        sb(
            &mut o,
            format!("--array=0-{}{limit}", s.array_tasks.saturating_sub(1)),
        );
        sb(&mut o, "--output=%x-%A_%a.out".into());
    } else {
        sb(&mut o, "--output=%x-%j.out".into());
    }
    if let Some(r) = s.requeue {
        sb(&mut o, "--requeue".into());
        sb(&mut o, format!("--signal=B:USR1@{}", r.lead_s));
        // Every attempt appends to one output file instead of truncating it.
        sb(&mut o, "--open-mode=append".into());
    }
    o
}

/// Strict bash, the binary, a line saying where the job runs, and `timed`.
fn preamble(s: &JobSpec) -> String {
    let mut o = String::new();
    let array = s.model == Model::Array;
    let _ = writeln!(o, "set -euo pipefail\n");
    for m in &s.modules {
        let _ = writeln!(o, "module load {}", shell_quote(m));
    }
    for line in &s.setup {
        let _ = writeln!(o, "{line}");
    }
    let _ = writeln!(o, "NISMOOTH={}", shell_quote(&s.binary));
    let _ = writeln!(
        o,
        "echo \"job ${{SLURM_JOB_ID}}{} on ${{SLURM_JOB_NODELIST}}: ${{SLURM_NTASKS:-1}} task(s) x ${{SLURM_CPUS_PER_TASK:-1}} CPU(s)\"",
        if array { " (array task ${SLURM_ARRAY_TASK_ID} of ${SLURM_ARRAY_TASK_COUNT})" } else { "" }
    );
    if s.requeue.is_some() || s.model.uses_srun() {
        // The run goes to the background (`requeued`), or its ranks are
        // srun's, whose own time would measure srun, not them (the report
        // has every rank's CPU and memory): no `timed` around it.
        return o;
    }
    // `\time`: GNU time where installed, else bash's `time` keyword.
    o.push_str(concat!(
        "timed() {\n",
        "  if [ -x /usr/bin/time ]; then\n",
        "    /usr/bin/time -f 'time: wall %e s, user %U s, sys %S s, CPU %P, max RSS %M KiB' \"$@\"\n",
        "  else\n",
        "    TIMEFORMAT='time: wall %R s, user %U s, sys %S s, CPU %P%%'\n",
        "    time \"$@\"\n",
        "  fi\n",
        "}\n",
    ));
    o
}

/// The run itself: `nismooth run` with the model's options, under srun
/// for the models whose ranks it starts.
fn run_line(s: &JobSpec) -> String {
    let array = s.model == Model::Array;
    // `bids BIDS_DIR OUT participant …` runs `nismooth bids`; anything else `nismooth run`.
    let (command, words) = match s.run_args.split_first() {
        Some((first, rest)) if first == "bids" => ("bids", rest),
        _ => ("run", &s.run_args[..]),
    };
    let mut args: Vec<String> = words.iter().map(|a| shell_quote(a)).collect();
    let has = |flag: &str| {
        s.run_args
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    if !has("--report") {
        // A requeued job keeps its id: each attempt's report is apart (%r).
        let name = match (array, s.requeue.is_some()) {
            (true, false) => "nismooth-%A_%a.json",
            (true, true) => "nismooth-%A_%a.%r.json",
            (false, false) => "nismooth-%j.json",
            (false, true) => "nismooth-%j.%r.json",
        };
        args.push(format!("--report {name}"));
    }
    if !has("--progress") {
        args.push("--progress log".into());
    }
    match s.model {
        // What the model needs, unless the run arguments say it already
        // (`run` refuses a flag given twice).
        Model::Serial if !has("--threads") => args.push("--threads 1".into()),
        Model::Array => {
            if !has("--array") {
                args.push("--array".into());
            }
            match s.array_chunk {
                Some(k) if !has("--array-chunk") => args.push(format!("--array-chunk {k}")),
                _ => {}
            }
        }
        Model::Gpu if !has("--backend") => args.push("--backend cuda".into()),
        _ => {}
    }
    let launcher = match s.model {
        // (The models of `Model::uses_srun`.) Since Slurm 22.05 srun no longer inherits --cpus-per-task from the
        // allocation: pass it, or each rank is confined to one CPU.
        // A rank that dies alone (killed, a lost node) ends the step: the
        // others would wait for it in their next collective. Ranks that end
        // well end together with one exit code.
        Model::Mpi | Model::Gpu | Model::Hybrid => {
            "srun --mpi=pmix --kill-on-bad-exit=1 --cpus-per-task=\"${SLURM_CPUS_PER_TASK:-1}\" "
        }
        _ => "",
    };
    let run = format!("{launcher}\"$NISMOOTH\" {command} {}", args.join(" "));
    match s.requeue {
        None if s.model.uses_srun() => format!("\n{run}\n"),
        None => format!("\ntimed {run}\n"),
        Some(r) => requeued(&run, r, array),
    }
}

/// The run in the background, so that the script's trap can pass Slurm's
/// USR1 on to it (srun passes it to every rank); the job requeues itself
/// when the run stopped early (exit 3) and requeues are left. A restarted
/// job's run resumes by itself (`SLURM_RESTART_COUNT`).
fn requeued(run: &str, r: Requeue, array: bool) -> String {
    // An array task by its array id and index: one of the tasks has the
    // array's own id as its SLURM_JOB_ID, and requeueing that id requeues
    // every task of the array.
    let job = if array {
        "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
    } else {
        "${SLURM_JOB_ID}"
    };
    format!(
        concat!(
            "\n# Slurm sends USR1 {lead} s before the time limit: the run stops starting images,\n",
            "# finishes those in flight, writes its report and exits 3; the job then requeues\n",
            "# itself (at most {max} times) and the next attempt resumes where this one stopped.\n",
            "attempt=$(( ${{SLURM_RESTART_COUNT:-0}} + 1 ))\n",
            "echo \"attempt ${{attempt}} started $(date -Is)\"\n",
            "# The traps come first: a signal before them would end this script. Slurm's\n",
            "# USR1, and its TERM at the limit itself, go on to the run.\n",
            "run_pid=\"\"\n",
            "signalled=0\n",
            "pass_on() {{ signalled=1; echo \"$1: draining the run\"; [ -z \"$run_pid\" ] || kill -\"$1\" \"$run_pid\" 2>/dev/null || true; }}\n",
            "trap 'pass_on USR1' USR1\n",
            "trap 'pass_on TERM' TERM\n",
            "# The run says, when it stops early, that this script requeues it.\n",
            "export NISMOOTH_REQUEUES_LEFT=$(( {max} - ${{SLURM_RESTART_COUNT:-0}} ))\n",
            "{run} &\n",
            "run_pid=$!\n",
            "# `wait` returns early (above 128) when a trap runs: wait again for the run's own code.\n",
            "while :; do\n",
            "  signalled=0\n",
            "  wait \"$run_pid\" && rc=0 || rc=$?\n",
            "  [ \"$signalled\" = 1 ] && [ \"$rc\" -gt 128 ] || break\n",
            "done\n",
            "echo \"attempt ${{attempt}} ended $(date -Is) with exit code ${{rc}}\"\n",
            "if [ \"$rc\" -eq 3 ] && [ \"${{SLURM_RESTART_COUNT:-0}}\" -lt {max} ]; then\n",
            "  echo \"stopped early: requeueing job {job} for attempt $(( attempt + 1 ))\"\n",
            "  scontrol requeue \"{job}\" || echo \"scontrol requeue failed: resubmit this script to finish\"\n",
            "fi\n",
            "exit \"$rc\"\n",
        ),
        lead = r.lead_s,
        max = r.max,
        run = run,
        job = job
    )
}

/// What to read after the job: where CPU efficiency is, and for an array
/// how to merge its reports.
fn afterword(s: &JobSpec) -> String {
    let mut o = String::new();
    if !matches!(s.model, Model::Mpi | Model::Gpu | Model::Hybrid) {
        let _ = writeln!(
            o,
            "# CPU efficiency = CPU% above / (100 × {} CPU(s)); the report has it per process.",
            s.cpus_per_task
        );
    } else {
        let _ = writeln!(
            o,
            "# The report has every rank's CPU efficiency and peak memory ({} ranks); sacct has the step's.",
            s.ranks()
        );
    }
    if s.requeue.is_some() {
        let reports = if s.model == Model::Array {
            "nismooth-<array job id>_*.*.json"
        } else {
            "nismooth-<job id>.*.json"
        };
        let _ = writeln!(
            o,
            "# One report per attempt (.0, .1, …); the whole job's:\n#   $NISMOOTH report merge {reports} -o nismooth-<job id>.json"
        );
    } else if s.model == Model::Array {
        let _ = writeln!(
            o,
            "# When every task is done, one report for the whole array:\n#   $NISMOOTH report merge nismooth-<array job id>_*.json -o nismooth-<array job id>.json"
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(model: Model) -> JobSpec {
        let run_args = vec!["/data/in dir".into(), "-o".into(), "/data/out".into()];
        JobSpec {
            partition: Some("debug".into()),
            time: "00:30:00".into(),
            nodes: 2,
            ntasks_per_node: 4,
            cpus_per_task: 3,
            memory: Memory::PerCpu { mib: 1024 },
            gpus_per_node: 2,
            array_tasks: 10,
            array_limit: Some(4),
            ..JobSpec::new(model, "/opt/nismooth/bin/nismooth".into(), run_args)
        }
        .shape()
    }

    #[test]
    fn requests_follow_the_model() {
        let s = render(&spec(Model::Serial));
        assert!(
            s.contains("--nodes=1\n")
                && s.contains("--ntasks-per-node=1\n")
                && s.contains("--cpus-per-task=1\n")
        );
        assert!(s.contains("--threads 1") && !s.contains("srun"));
        let m = render(&spec(Model::Mpi));
        assert!(
            m.contains("--nodes=2\n")
                && m.contains("--ntasks-per-node=4\n")
                && m.contains("--cpus-per-task=1\n")
        );
        assert!(m.contains("srun --mpi=pmix") && m.contains("--output=%x-%j.out"));
        let h = render(&spec(Model::Hybrid));
        assert!(h.contains("--cpus-per-task=3\n") && h.contains("srun --mpi=pmix"));
        let g = render(&spec(Model::Gpu));
        assert!(
            g.contains("--gres=gpu:2\n")
                && g.contains("--ntasks-per-node=2\n")
                && g.contains("--backend cuda")
        );
        let a = render(&spec(Model::Array));
        assert!(
            a.contains("--array=0-9%4\n")
                && a.contains("--output=%x-%A_%a.out")
                && a.contains(" --array")
        );
        assert!(a.contains("nismooth-%A_%a.json") && !a.contains("srun"));
        let t = render(&spec(Model::Threads));
        assert!(t.contains("--nodes=1\n") && t.contains("--cpus-per-task=3\n"));
        for (script, srun) in [
            (s, false),
            (m, true),
            (h, true),
            (g, true),
            (a, false),
            (t, false),
        ] {
            assert!(script.contains("'/data/in dir'"), "arguments are quoted");
            assert!(script.contains("--mem-per-cpu=1G") && script.contains("--time=00:30:00"));
            // srun's own time would measure srun, not its ranks.
            assert_eq!(script.contains("timed "), !srun, "{script}");
        }
    }

    #[test]
    fn quoting_survives_the_shell() {
        assert_eq!(shell_quote("plain/path.nii.gz"), "plain/path.nii.gz");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
