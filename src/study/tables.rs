//! A study as the course's tables: Markdown for people, CSV for spreadsheets.

use std::fmt::Write;

use super::{Study, StudyPoint};
use crate::metrics::mib;

const COLUMNS: [&str; 17] = [
    "ranks",
    "threads",
    "tasks",
    "rep",
    "peak_mem_per_rank_MiB",
    "peak_mem_total_MiB",
    "wall_s",
    "outer_wall_s",
    "read_s",
    "filter_s",
    "write_s",
    "cpu_efficiency",
    "read_per_task_s",
    "filter_per_task_s",
    "write_per_task_s",
    "wtime_over_ptime",
    "mem_per_task_MiB",
];

fn row(p: &StudyPoint) -> [String; 17] {
    [
        p.ranks.to_string(),
        p.threads.to_string(),
        p.tasks.to_string(),
        p.rep.to_string(),
        format!("{:.1}", mib(p.peak_rss_max_bytes as f64)),
        format!("{:.1}", mib(p.peak_rss_total_bytes as f64)),
        format!("{:.3}", p.wall_s),
        format!("{:.3}", p.outer_wall_s),
        format!("{:.3}", p.read_s),
        format!("{:.3}", p.filter_s),
        format!("{:.3}", p.write_s),
        format!("{:.3}", p.cpu_efficiency),
        format!("{:.4}", p.read_per_task_s),
        format!("{:.4}", p.filter_per_task_s),
        format!("{:.4}", p.write_per_task_s),
        format!("{:.3}", p.wtime_over_ptime),
        format!("{:.2}", mib(p.mem_per_task_bytes)),
    ]
}

pub fn csv(study: &Study) -> String {
    let mut o = COLUMNS.join(",") + "\n";
    for p in &study.points {
        o += &row(p).join(",");
        o.push('\n');
    }
    o
}

pub fn markdown(study: &Study) -> String {
    let mut o = String::new();
    let s = &study.spec;
    let _ = writeln!(
        o,
        "Study on {} ({}, {} cores), nismooth {}: ranks {:?}, threads {:?}, tasks {:?}, schedule {:?}, {} rep(s).\n",
        study.host, study.cpu, study.cores, study.nismooth_version, s.ranks, s.threads, s.tasks, s.schedule, s.reps
    );
    let headers = [
        "ranks",
        "threads",
        "tasks",
        "peak mem/rank (MiB)",
        "peak mem total (MiB)",
        "wall (s)",
        "read (s)",
        "filter (s)",
        "write (s)",
        "CPU eff.",
        "read/task (s)",
        "filter/task (s)",
        "write/task (s)",
        "wtime/ptime",
        "mem/task (MiB)",
    ];
    let _ = writeln!(o, "| {} |", headers.join(" | "));
    let _ = writeln!(o, "|{}", "---|".repeat(headers.len()));
    for p in &study.points {
        let r = row(p);
        let cells = [
            &r[0],
            &r[1],
            &r[2],
            &r[4],
            &r[5],
            &r[6],
            &r[8],
            &r[9],
            &r[10],
            &format!("{:.0}%", 100.0 * p.cpu_efficiency),
            &r[12],
            &r[13],
            &r[14],
            &r[15],
            &r[16],
        ];
        let _ = writeln!(
            o,
            "| {} |",
            cells
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    o
}
