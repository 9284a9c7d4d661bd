//! A study as tables: Markdown for people, CSV for spreadsheets.

use std::fmt::Write;

#[cfg(test)]
use super::StudySpec;
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
        "Study on {} ({}, {} cores), nismooth {}: ranks {:?}, threads {:?}, tasks {:?}, schedule {}, {} rep(s).\n",
        study.host, study.cpu, study.cores, study.nismooth_version, s.ranks, s.threads, s.tasks, s.schedule, s.reps
    );
    let headers = [
        "ranks",
        "threads",
        "tasks",
        "peak mem/rank (MiB)",
        "peak mem total (MiB)",
        "wall (s): median (min–max of reps)",
        "launcher (s)",
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
    for group in groups(&study.points) {
        // The middle repetition stands for the group; the wall shows the spread.
        let n = group.len();
        let p = group[(n - 1) / 2];
        let r = row(p);
        let wall = if n > 1 {
            let median = (group[(n - 1) / 2].wall_s + group[n / 2].wall_s) / 2.0;
            let (lo, hi) = (group[0].wall_s, group[n - 1].wall_s);
            format!("{median:.3} ({lo:.3}–{hi:.3})")
        } else {
            r[6].clone()
        };
        let launcher: Vec<f64> = group
            .iter()
            .map(|q| (q.outer_wall_s - q.wall_s).max(0.0))
            .collect();
        let cells = [
            &r[0],
            &r[1],
            &r[2],
            &r[4],
            &r[5],
            &wall,
            &format!("{:.3}", launcher[launcher.len() / 2]),
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

/// The points grouped by (ranks, threads, tasks) in the study's order, each
/// group's repetitions sorted by wall time.
fn groups(points: &[StudyPoint]) -> Vec<Vec<&StudyPoint>> {
    let mut out: Vec<Vec<&StudyPoint>> = Vec::new();
    for p in points {
        let key = (p.ranks, p.threads, p.tasks);
        match out
            .iter_mut()
            .find(|g| (g[0].ranks, g[0].threads, g[0].tasks) == key)
        {
            Some(g) => g.push(p),
            None => out.push(vec![p]),
        }
    }
    for g in &mut out {
        g.sort_by(|a, b| a.wall_s.total_cmp(&b.wall_s));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::test_point;

    #[test]
    fn repetitions_are_one_row_with_their_spread() {
        let mut points = Vec::new();
        for (rep, wall) in [(0, 2.0), (1, 3.0), (2, 2.5), (3, 2.7)] {
            let mut p = test_point(2, 8, wall, 1 << 20);
            p.rep = rep;
            p.outer_wall_s = wall + 0.4;
            points.push(p);
        }
        points.push(test_point(1, 8, 4.0, 1 << 20));
        let spec: StudySpec = serde_json::from_value(serde_json::json!({
            "ranks": [1, 2], "threads": [1], "tasks": [8], "schedule": "balanced",
            "launcher": "auto", "reps": 3, "run_args": []
        }))
        .unwrap();
        let study = Study {
            schema: "nismooth-study".into(),
            nismooth_version: "0".into(),
            host: "h".into(),
            cpu: "c".into(),
            cores: 2,
            folder: None,
            spec,
            points,
        };
        let md = markdown(&study);
        let rows: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| ranks"))
            .collect();
        assert_eq!(rows.len(), 2, "{md}");
        assert!(rows[0].contains("| 2.600 (2.000–3.000) | 0.400 |"), "{md}");
        assert!(rows[1].contains("| 4.000 | 0.000 |"), "{md}");
        assert_eq!(
            csv(&study).lines().count(),
            1 + 5,
            "the CSV keeps every repetition"
        );
    }
}
