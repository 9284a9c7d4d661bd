//! The run as a timeline: the Chrome trace-event format (JSON), which
//! Perfetto (ui.perfetto.dev) and `chrome://tracing` open.
//!
//! A process per rank; in it a track per stage lane (`read 1`, `filter 1`,
//! `write 1`, …): a stage's spans on one rank are laid out greedily into
//! as few lanes as keep them from overlapping, so readers working side by
//! side (`--readers 2`) show as two lanes, as two threads would. A slice
//! per stage of each image (or part), named by the input's file name with
//! its bytes; a counter of the images each rank holds in flight. Times are
//! microseconds from the first span of the run.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{ExportError, Exporter, ImageRecord, Report, Span, Stage};

pub struct Trace;

impl Exporter for Trace {
    fn render(&self, report: &Report) -> Result<String, ExportError> {
        let t0 = (report.images.iter())
            .flat_map(|i| &i.spans)
            .map(|s| s.start)
            .fold(f64::INFINITY, f64::min);
        let us = |t: f64| ((t - t0) * 1e6).max(0.0);
        let mut events = process_names(report);
        let mut lanes = Lanes::default();
        for image in &report.images {
            for span in &image.spans {
                let tid = lanes.place(span);
                events.push(json!({
                    "name": file_name(&image.input),
                    "cat": stage_name(span.stage),
                    "ph": "X",
                    "ts": us(span.start),
                    "dur": ((span.end - span.start) * 1e6).max(0.0),
                    "pid": span.rank,
                    "tid": tid,
                    "args": args(image, span.stage),
                }));
            }
        }
        events.extend(lanes.names());
        events.extend(in_flight(report, &us));
        let trace = json!({
            "traceEvents": events,
            "displayTimeUnit": "ms",
            "otherData": {
                "nismooth_version": report.nismooth_version,
                "command": report.command.join(" "),
            },
        });
        Ok(serde_json::to_string(&trace)?)
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Read => "read",
        Stage::Filter => "filter",
        Stage::Write => "write",
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// What a slice says of its image: the input, and the bytes or voxels its
/// stage moved.
fn args(image: &ImageRecord, stage: Stage) -> Value {
    let moved = match stage {
        Stage::Read => json!({ "bytes_in": image.bytes_in }),
        Stage::Filter => json!({ "voxels": image.voxels }),
        Stage::Write => json!({ "bytes_out": image.bytes_out }),
    };
    json!({ "input": image.input, "index": image.index, "moved": moved })
}

/// "rank R (host)" for every rank with a process record.
fn process_names(report: &Report) -> Vec<Value> {
    (report.processes.iter())
        .map(|p| {
            json!({
                "name": "process_name", "ph": "M", "pid": p.rank,
                "args": { "name": format!("rank {} ({})", p.rank, p.host) },
            })
        })
        .collect()
}

/// Each (rank, stage)'s lanes: when each lane is next free.
#[derive(Default)]
struct Lanes {
    free_at: BTreeMap<(usize, Stage), Vec<f64>>,
}

impl Lanes {
    /// The thread id of a lane where `span` overlaps nothing: stage × 100 +
    /// lane (read 1.., filter 101.., write 201..). Spans come in image
    /// order, which is nearly start order on each rank; a span that starts
    /// before a lane's last end goes to another lane.
    fn place(&mut self, span: &Span) -> usize {
        let lanes = self.free_at.entry((span.rank, span.stage)).or_default();
        let lane = match lanes.iter().position(|&free| free <= span.start) {
            Some(l) => l,
            None => {
                lanes.push(f64::NEG_INFINITY);
                lanes.len() - 1
            }
        };
        lanes[lane] = span.end;
        tid(span.stage, lane)
    }

    /// The tracks' names, in stage order on each rank.
    fn names(&self) -> Vec<Value> {
        (self.free_at.iter())
            .flat_map(|(&(rank, stage), lanes)| {
                (0..lanes.len()).map(move |lane| {
                    json!({
                        "name": "thread_name", "ph": "M", "pid": rank, "tid": tid(stage, lane),
                        "args": { "name": format!("{} {}", stage_name(stage), lane + 1) },
                    })
                })
            })
            .collect()
    }
}

fn tid(stage: Stage, lane: usize) -> usize {
    stage as usize * 100 + lane + 1
}

/// Per rank, a counter of the images it holds: from an image's first span
/// there to its last.
fn in_flight(report: &Report, us: &dyn Fn(f64) -> f64) -> Vec<Value> {
    let mut changes: BTreeMap<usize, Vec<(f64, i64)>> = BTreeMap::new();
    for image in &report.images {
        let mut per_rank: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
        for s in &image.spans {
            let e = per_rank.entry(s.rank).or_insert((s.start, s.end));
            *e = (e.0.min(s.start), e.1.max(s.end));
        }
        for (rank, (start, end)) in per_rank {
            let c = changes.entry(rank).or_default();
            c.extend([(start, 1), (end, -1)]);
        }
    }
    let mut events = Vec::new();
    for (rank, mut c) in changes {
        // Ends before starts at one instant: a lane handed on is not two images.
        c.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut held = 0;
        for (t, d) in c {
            held += d;
            events.push(json!({
                "name": "images in flight", "ph": "C", "pid": rank, "ts": us(t),
                "args": { "images": held },
            }));
        }
    }
    events
}
