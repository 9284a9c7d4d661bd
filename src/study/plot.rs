//! The study's plots, as SVG and PNG: wall time vs tasks, speed-up and
//! efficiency vs ranks, peak memory vs tasks, and the read/filter/write stack
//! of every point. PNG text needs a TrueType font: DejaVu Sans from Debian's
//! fonts-dejavu-core (or NISMOOTH_FONT); without one, only SVGs are written.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Study, StudyError, StudyPoint};

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a font for the bitmap backend; false when none is found.
fn register_font() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let path = std::env::var("NISMOOTH_FONT")
            .ok()
            .into_iter()
            .chain(FONT_PATHS.iter().map(|s| s.to_string()))
            .find(|p| Path::new(p).exists());
        let Some(bytes) = path.and_then(|p| std::fs::read(p).ok()) else {
            return false;
        };
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

type Series = Vec<(String, Vec<(f64, f64)>)>;
/// One stacked stage: its name, colour, and seconds of a point.
type Stage = (&'static str, RGBColor, fn(&StudyPoint) -> f64);

/// Mean over reps of `f`, grouped by (ranks, threads) and keyed by `x`.
fn series(points: &[StudyPoint], x: fn(&StudyPoint) -> f64, f: fn(&StudyPoint) -> f64) -> Series {
    let mut keys: Vec<(usize, usize)> = points.iter().map(|p| (p.ranks, p.threads)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .map(|(r, t)| {
            let g: Vec<&StudyPoint> = points
                .iter()
                .filter(|p| p.ranks == r && p.threads == t)
                .collect();
            let mut xs: Vec<f64> = g.iter().map(|p| x(p)).collect();
            xs.sort_by(f64::total_cmp);
            xs.dedup();
            let pts = xs
                .into_iter()
                .map(|xv| {
                    let ys: Vec<f64> = g.iter().filter(|p| x(p) == xv).map(|p| f(p)).collect();
                    (xv, ys.iter().sum::<f64>() / ys.len() as f64)
                })
                .collect();
            (format!("{r} rank(s) × {t} thread(s)"), pts)
        })
        .collect()
}

/// A drawing error, as text (plotters' errors carry their backend's type).
fn drawing<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

fn plot_error(path: &Path) -> impl FnOnce(String) -> StudyError + '_ {
    move |message| StudyError::Plot {
        path: path.to_path_buf(),
        message,
    }
}

fn line_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    data: &Series,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE).map_err(drawing)?;
    let all = data.iter().flat_map(|(_, p)| p.iter());
    let (xmax, ymax) = all.fold((1.0f64, 0.0f64), |(x, y), &(a, b)| (x.max(a), y.max(b)));
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..xmax * 1.05, 0.0..(ymax * 1.15).max(1e-9))
        .map_err(drawing)?;
    // Ranks are whole: one tick per rank, no 1.5.
    let whole = xlabel == "ranks";
    let ticks = if whole { xmax as usize + 1 } else { 10 };
    let label = |x: &f64| {
        if !whole {
            format!("{x}")
        } else if x.fract() == 0.0 {
            format!("{x:.0}")
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc(xlabel)
        .y_desc(ylabel)
        .x_labels(ticks)
        .x_label_formatter(&label)
        .draw()
        .map_err(drawing)?;
    for (i, (name, pts)) in data.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(drawing)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(drawing)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(drawing)?;
    area.present().map_err(drawing)?;
    Ok(())
}

fn stages_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    points: &[StudyPoint],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE).map_err(drawing)?;
    let n = points.len().max(1);
    let ymax = points
        .iter()
        .map(|p| p.read_s + p.filter_s + p.write_s)
        .fold(0.0f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "read / filter / write per point (summed over images)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..(ymax * 1.15).max(1e-9))
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("point: ranks × threads, images (#repetition), in study order")
        .y_desc("seconds")
        .x_labels(n.min(24) + 1)
        .x_label_formatter(&|x| {
            // Label only the bar centres (whole numbers).
            let i = x.round();
            if (x - i).abs() > 0.05 || i < 0.0 {
                return String::new();
            }
            points
                .get(i as usize)
                .map(|p| format!("{}×{}, {} img #{}", p.ranks, p.threads, p.tasks, p.rep))
                .unwrap_or_default()
        })
        .draw()
        .map_err(drawing)?;
    let stages: [Stage; 3] = [
        ("read", RGBColor(66, 133, 244), |p| p.read_s),
        ("filter", RGBColor(52, 168, 83), |p| p.filter_s),
        ("write", RGBColor(234, 67, 53), |p| p.write_s),
    ];
    for (k, (name, color, f)) in stages.iter().enumerate() {
        let rects = points.iter().enumerate().map(|(i, p)| {
            let below: f64 = stages[..k].iter().map(|s| (s.2)(p)).sum();
            Rectangle::new(
                [(i as f64 - 0.35, below), (i as f64 + 0.35, below + f(p))],
                color.filled(),
            )
        });
        let c = *color;
        chart
            .draw_series(rects)
            .map_err(drawing)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(drawing)?;
    area.present().map_err(drawing)?;
    Ok(())
}

/// Speed-up and efficiency over ranks, at the largest task count of each thread count.
fn scaling_series(points: &[StudyPoint]) -> (Series, Series) {
    let mut speed = Vec::new();
    let mut eff = Vec::new();
    let mut threads: Vec<usize> = points.iter().map(|p| p.threads).collect();
    threads.sort_unstable();
    threads.dedup();
    for t in threads {
        let tasks = points
            .iter()
            .filter(|p| p.threads == t)
            .map(|p| p.tasks)
            .max()
            .unwrap_or(0);
        let g: Vec<&StudyPoint> = points
            .iter()
            .filter(|p| p.threads == t && p.tasks == tasks)
            .collect();
        let mut ranks: Vec<usize> = g.iter().map(|p| p.ranks).collect();
        ranks.sort_unstable();
        ranks.dedup();
        let mean = |r: usize| {
            let w: Vec<f64> = g
                .iter()
                .filter(|p| p.ranks == r)
                .map(|p| p.wall_s)
                .collect();
            w.iter().sum::<f64>() / w.len() as f64
        };
        let Some(&r0) = ranks.first() else { continue };
        let base = mean(r0) * r0 as f64;
        let s: Vec<(f64, f64)> = ranks.iter().map(|&r| (r as f64, base / mean(r))).collect();
        eff.push((
            format!("{t} thread(s), {tasks} tasks"),
            s.iter().map(|&(r, v)| (r, v / r)).collect(),
        ));
        speed.push((format!("{t} thread(s), {tasks} tasks"), s));
    }
    (speed, eff)
}

/// The charts `write_all` draws, by file name (each `.svg`, and `.png`).
pub const CHARTS: [&str; 5] = [
    "wall_vs_tasks",
    "speedup_vs_ranks",
    "efficiency_vs_ranks",
    "memory_vs_tasks",
    "stages",
];

/// The files a study writes into its folder by fixed names: its record, its
/// tables and its charts.
pub fn own_files() -> Vec<String> {
    ["study.json", "study.csv", "study.md"]
        .map(String::from)
        .into_iter()
        .chain(
            CHARTS
                .iter()
                .flat_map(|c| [format!("{c}.svg"), format!("{c}.png")]),
        )
        .collect()
}

/// One chart of `CHARTS`, drawn alike onto either backend.
enum Chart<'a> {
    Line {
        title: &'static str,
        x: &'static str,
        y: &'static str,
        data: &'a Series,
    },
    Stages(&'a [StudyPoint]),
}

impl Chart<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        match self {
            Chart::Line { title, x, y, data } => line_chart(area, title, x, y, data),
            Chart::Stages(points) => stages_chart(area, points),
        }
    }
}

/// Writes every plot into `dir` as SVG, and as PNG when a font is available.
pub fn write_all(study: &Study, dir: &Path) -> Result<Vec<PathBuf>, StudyError> {
    let pts = &study.points;
    let wall = series(pts, |p| p.tasks as f64, |p| p.wall_s);
    let mem = series(
        pts,
        |p| p.tasks as f64,
        |p| crate::metrics::mib(p.peak_rss_max_bytes as f64),
    );
    let (mut speed, mut eff) = scaling_series(pts);
    // Ideal (linear) scaling over the ranks studied, for the eye to measure against.
    let top = pts.iter().map(|p| p.ranks).max().unwrap_or(1).max(1);
    let ranks = || (1..=top).map(|r| r as f64);
    speed.push(("ideal (linear)".into(), ranks().map(|r| (r, r)).collect()));
    eff.push(("ideal (linear)".into(), ranks().map(|r| (r, 1.0)).collect()));
    let line = |title, x, y, data| Chart::Line { title, x, y, data };
    let charts = [
        line("wall time vs tasks", "tasks (images)", "wall (s)", &wall),
        line("speed-up vs ranks", "ranks", "speed-up", &speed),
        line("parallel efficiency vs ranks", "ranks", "efficiency", &eff),
        line(
            "peak memory per rank vs tasks",
            "tasks (images)",
            "MiB",
            &mem,
        ),
        Chart::Stages(pts),
    ];
    let png = register_font();
    if !png {
        log::warn!("no TrueType font (install fonts-dejavu-core or set NISMOOTH_FONT): writing SVG plots only");
    }
    let mut written = Vec::new();
    for (name, chart) in CHARTS.iter().zip(&charts) {
        let p = dir.join(format!("{name}.svg"));
        chart
            .draw(&SVGBackend::new(&p, (900, 560)).into_drawing_area())
            .map_err(plot_error(&p))?;
        written.push(p);
        if png {
            let p = dir.join(format!("{name}.png"));
            chart
                .draw(&BitMapBackend::new(&p, (900, 560)).into_drawing_area())
                .map_err(plot_error(&p))?;
            written.push(p);
        }
    }
    Ok(written)
}
