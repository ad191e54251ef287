//! The run's "over time" PNG, every panel on one time axis: per operation p99 (solid) and p50
//! (dashed) per timeline bucket on a log-scale millisecond axis; the ledger's lag and the holds
//! shed; the ledger's insert latency; and the CPU and RSS of the service and the other
//! processes sampled (Redis, the MongoDB server, the broker).
//!
//! Text is drawn with plotters' `ab_glyph` renderer, which knows no system fonts: a TrueType
//! file is read from the first of `FONT_PATHS` that exists and registered once per process.
//! Nothing here needs fontconfig or freetype.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, Context};
use plotters::chart::SeriesLabelStyle;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::series::DashedLineSeries;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

/// One operation's latency per one-second bucket of the run.
pub struct Series {
    /// e.g. "hold", "confirm", "push_sse"
    pub name: String,
    /// (seconds since load start, p50 ms, p99 ms)
    pub points: Vec<(f64, f64, f64)>,
}

/// What was sampled during the run, each point at its seconds since the load's start.
#[derive(Default)]
pub struct Resources {
    /// By process ("service" first): (t, CPU % of one core, RSS MB).
    pub processes: Vec<(String, Vec<Sample>)>,
    /// (t, the most behind outlet's ledger lag in s, holds shed per second)
    pub ledger: Vec<(f64, f64, f64)>,
    /// (t, mean ledger insert ms over the sample)
    pub insert: Vec<(f64, f64)>,
}

/// (seconds since load start, value, value): one bucket of a `Series` or `Resources`.
pub type Sample = (f64, f64, f64);

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 1500;
/// Latencies at or below zero cannot sit on a log axis; they are drawn at this floor.
const FLOOR_MS: f64 = 0.05;

/// Tried in order; the first that exists is used. The env variable comes first so another
/// distribution can point at its own font without a code change.
const FONT_ENV: &str = "SHELFSYNC_PLOT_FONT";
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", // Debian/Ubuntu: fonts-dejavu-core
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",          // Fedora
    "/usr/share/fonts/TTF/DejaVuSans.ttf",             // Arch
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
];

/// Tableau 10: distinct on white, and still distinct when drawn thin and dashed.
const COLORS: &[RGBColor] = &[
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const CPU_COLOR: RGBColor = RGBColor(214, 39, 40);
const RSS_COLOR: RGBColor = RGBColor(31, 119, 180);

/// Registers the font once per process; every later call returns the first call's outcome.
fn ensure_font() -> anyhow::Result<()> {
    static FONT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match FONT.get_or_init(load_font) {
        Ok(_) => Ok(()),
        Err(e) => Err(anyhow!("{e}")),
    }
}

fn load_font() -> Result<PathBuf, String> {
    let from_env = std::env::var_os(FONT_ENV).map(PathBuf::from);
    let candidates = from_env
        .into_iter()
        .chain(FONT_PATHS.iter().map(PathBuf::from));
    let mut tried = Vec::new();
    for path in candidates {
        if !path.is_file() {
            tried.push(path.display().to_string());
            continue;
        }
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("reading plot font {}: {e}", path.display()))?;
        // plotters keeps `&'static [u8]`; one font per process, so leaking it is the price.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        // Every family plotters may ask for resolves to this one face.
        for family in ["sans-serif", "serif", "monospace"] {
            register_font(family, FontStyle::Normal, bytes)
                .map_err(|_| format!("{} is not a font ab_glyph can parse", path.display()))?;
        }
        return Ok(path);
    }
    Err(format!(
        "no font for the latency plot: none of {} exists; install one with \
         `apt-get install fonts-dejavu-core` or set {FONT_ENV} to a .ttf file",
        tried.join(", ")
    ))
}

/// Points usable on the plot: finite (NaN or infinity is a missing bucket, not a value), in
/// time order, latencies clamped up to `FLOOR_MS` so zero and below stay on the log axis.
fn clean_latency(points: &[Sample]) -> Vec<Sample> {
    let mut out: Vec<_> = points
        .iter()
        .filter(|(t, p50, p99)| t.is_finite() && p50.is_finite() && p99.is_finite())
        .map(|&(t, p50, p99)| (t, p50.max(FLOOR_MS), p99.max(FLOOR_MS)))
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Resource points: finite time, CPU and RSS at least zero.
fn clean_resources(points: &[Sample]) -> Vec<Sample> {
    let mut out: Vec<_> = points
        .iter()
        .filter(|(t, cpu, rss)| t.is_finite() && cpu.is_finite() && rss.is_finite())
        .map(|&(t, cpu, rss)| (t, cpu.max(0.0), rss.max(0.0)))
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Millisecond tick labels that read as numbers, not as `5e-2`.
fn fmt_ms(v: &f64) -> String {
    let v = *v;
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        trim(format!("{v:.1}"))
    } else if v >= 0.1 {
        trim(format!("{v:.2}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn fmt_plain(v: &f64) -> String {
    if v.abs() >= 10.0 {
        format!("{v:.0}")
    } else {
        trim(format!("{v:.1}"))
    }
}

/// Writes the PNG: latency p99 (solid) and p50 (dashed, thinner) per series, log-scale y in ms;
/// the ledger lag (s, left axis) and holds shed per second (right axis); the ledger insert
/// latency (ms, log scale); CPU % of one core per process; RSS MB per process. One time axis
/// for all. Title on top (`title`).
pub fn latency_png(
    path: &Path,
    title: &str,
    series: &[Series],
    resources: &Resources,
) -> anyhow::Result<()> {
    ensure_font()?;
    let latency: Vec<(&str, Vec<Sample>)> = series
        .iter()
        .map(|s| (s.name.as_str(), clean_latency(&s.points)))
        .collect();
    let processes: Vec<(&str, Vec<Sample>)> = resources
        .processes
        .iter()
        .map(|(name, points)| (name.as_str(), clean_resources(points)))
        .collect();
    let ledger = clean_resources(&resources.ledger);
    let insert: Vec<Sample> = clean_latency(
        &resources
            .insert
            .iter()
            .map(|&(t, ms)| (t, ms, ms))
            .collect::<Vec<_>>(),
    );

    // One time axis for every panel, from the first to the last sample.
    let times = || {
        latency
            .iter()
            .chain(processes.iter())
            .flat_map(|(_, p)| p.iter().map(|q| q.0))
            .chain(ledger.iter().map(|q| q.0))
            .chain(insert.iter().map(|q| q.0))
    };
    let t_max = times().fold(0.0f64, f64::max);
    let t_min = times().fold(0.0f64, f64::min);
    let t_max = if t_max - t_min < 1.0 {
        t_min + 1.0
    } else {
        t_max
    };

    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let body = root.titled(title, ("sans-serif", 26))?;
    let (top, rest) = body.split_vertically(470);
    let (lag, rest) = rest.split_vertically(240);
    let (ins, rest) = rest.split_vertically(220);
    let (cpu, rss) = rest.split_vertically(260);

    draw_latency(&top, t_min..t_max, &latency)?;
    draw_ledger(&lag, t_min..t_max, &ledger)?;
    draw_insert(&ins, t_min..t_max, &insert)?;
    draw_processes(&cpu, t_min..t_max, &processes, "CPU (% of one core)", |q| {
        q.1
    })?;
    draw_processes(&rss, t_min..t_max, &processes, "RSS (MB)", |q| q.2)?;

    root.present()
        .with_context(|| format!("writing latency plot {}", path.display()))?;
    Ok(())
}

const LEFT_AREA: u32 = 80;
/// Points further apart than this (seconds, or timeline buckets) are not joined by a line.
const GAP_SECS: f64 = 1.5;
const RIGHT_AREA: u32 = 80;
const BOTTOM_AREA: u32 = 45;

fn draw_latency(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    x: std::ops::Range<f64>,
    latency: &[(&str, Vec<Sample>)],
) -> anyhow::Result<()> {
    let values = latency
        .iter()
        .flat_map(|(_, p)| p.iter().flat_map(|q| [q.1, q.2]));
    // Headroom above for the legend. No right axis here, but the same width kept free so
    // every panel's time axis lines up.
    let mut chart = log_panel(
        area,
        x,
        log_ms_range(values, 4.0),
        "latency (ms, log scale)",
        26,
    )?;

    // The key to the line styles, above the panel's top right corner.
    let (w, _) = area.dim_in_pixel();
    let grey = BLACK.mix(0.7);
    let key = TextStyle::from(("sans-serif", 14).into_font())
        .color(&grey)
        .pos(Pos::new(HPos::Right, VPos::Top));
    area.draw(&Text::new(
        "per timeline bucket: p99 solid, p50 dashed",
        ((w - 10 - RIGHT_AREA) as i32, 6),
        key,
    ))?;
    if latency.iter().all(|(_, p)| p.is_empty()) {
        note(area, "no latency samples")?;
    }

    for (i, (name, points)) in latency.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let p99 = ShapeStyle::from(color).stroke_width(2);
        let p50 = ShapeStyle::from(color.mix(0.85)).stroke_width(1);
        // Seconds without a sample (e.g. the wait for expiries) break the line rather than
        // being bridged by it.
        // (A bucket is `--bucket-secs` wide: the gap is counted in buckets.)
        let gap = GAP_SECS * crate::stats::Timeline::width();
        let runs: Vec<&[(f64, f64, f64)]> = points.chunk_by(|a, b| b.0 - a.0 <= gap).collect();
        for (r, run) in runs.iter().enumerate() {
            chart.draw_series(DashedLineSeries::new(
                run.iter().map(|q| (q.0, q.1)),
                6,
                4,
                p50,
            ))?;
            // A lone point draws no line segment: mark it so it is visible.
            let marker = if run.len() == 1 { 4 } else { 0 };
            let drawn = chart.draw_series(
                LineSeries::new(run.iter().map(|q| (q.0, q.2)), p99).point_size(marker),
            )?;
            if r == 0 {
                drawn
                    .label(name.to_string())
                    // One legend row per operation: its solid p99 line over its dashed p50.
                    .legend(move |(x, y)| {
                        EmptyElement::at((x, y))
                            + PathElement::new(vec![(0, -3), (24, -3)], p99)
                            + DashedPathElement::new(vec![(0, 4), (24, 4)], 5, 3, p50)
                    });
            }
            if run.len() == 1 {
                let q = run[0];
                chart.draw_series(std::iter::once(Circle::new((q.0, q.1), 3, p50)))?;
            }
        }
    }
    if !latency.is_empty() {
        legend(chart.configure_series_labels())?;
    }
    Ok(())
}

/// A log-scale millisecond range for `values`: a little below the least, `headroom` times the
/// most (room for the legend), at least a decade so the axis has labels.
fn log_ms_range(values: impl Iterator<Item = f64>, headroom: f64) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (1.0, 100.0)
    };
    let y_lo = (lo / 1.5).max(FLOOR_MS / 1.5);
    y_lo..(hi * headroom).max(y_lo * 10.0)
}

type LogChart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<
        plotters::coord::types::RangedCoordf64,
        plotters::coord::combinators::LogCoord<f64>,
    >,
>;

/// A chart with the shared layout: time on x, milliseconds on a log scale on the left.
fn log_panel<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    y_desc: &str,
    margin_top: u32,
) -> anyhow::Result<LogChart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .margin_top(margin_top)
        .margin_bottom(5)
        .margin_left(10)
        .margin_right(10 + RIGHT_AREA)
        .x_label_area_size(BOTTOM_AREA)
        .y_label_area_size(LEFT_AREA)
        .build_cartesian_2d(x, y.log_scale())?;
    chart
        .configure_mesh()
        .x_desc("time since load start (s)")
        .y_desc(y_desc)
        .x_label_formatter(&fmt_plain)
        .y_label_formatter(&fmt_ms)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    Ok(chart)
}

/// A chart with the shared layout: time on x (labelled), `y` on the left with `y_desc`.
fn panel<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    y_desc: &str,
) -> anyhow::Result<
    ChartContext<
        'a,
        BitMapBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
> {
    let mut chart = ChartBuilder::on(area)
        .margin_top(15)
        .margin_bottom(5)
        .margin_left(10)
        .margin_right(10 + RIGHT_AREA)
        .x_label_area_size(BOTTOM_AREA)
        .y_label_area_size(LEFT_AREA)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc("time since load start (s)")
        .y_desc(y_desc)
        .x_label_formatter(&fmt_plain)
        .y_label_formatter(&fmt_plain)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .y_labels(6)
        .draw()?;
    Ok(chart)
}

/// The most behind outlet's ledger lag (left axis, s) and the holds shed per second (right
/// axis).
fn draw_ledger(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    x: std::ops::Range<f64>,
    ledger: &[Sample],
) -> anyhow::Result<()> {
    let lag_hi = (ledger.iter().map(|q| q.1).fold(0.0f64, f64::max) * 1.3).max(1.0);
    let shed_hi = (ledger.iter().map(|q| q.2).fold(0.0f64, f64::max) * 1.3).max(1.0);
    let mut chart = ChartBuilder::on(area)
        .margin_top(15)
        .margin_bottom(5)
        .margin_left(10)
        .margin_right(10)
        .x_label_area_size(BOTTOM_AREA)
        .y_label_area_size(LEFT_AREA)
        .right_y_label_area_size(RIGHT_AREA)
        .build_cartesian_2d(x.clone(), 0.0..lag_hi)?
        .set_secondary_coord(x, 0.0..shed_hi);
    chart
        .configure_mesh()
        .x_desc("time since load start (s)")
        .y_desc("ledger lag (s)")
        .x_label_formatter(&fmt_plain)
        .y_label_formatter(&fmt_plain)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .y_labels(6)
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("holds shed per s")
        .y_label_formatter(&fmt_plain)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .y_labels(6)
        .draw()?;
    if ledger.is_empty() {
        return note(area, "no ledger samples");
    }
    let marker = if ledger.len() == 1 { 4 } else { 0 };
    let lag = ShapeStyle::from(RSS_COLOR).stroke_width(2);
    chart
        .draw_series(LineSeries::new(ledger.iter().map(|q| (q.0, q.1)), lag).point_size(marker))?
        .label("ledger lag, most behind outlet (left)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], lag));
    let shed = ShapeStyle::from(CPU_COLOR).stroke_width(2);
    chart
        .draw_secondary_series(
            LineSeries::new(ledger.iter().map(|q| (q.0, q.2)), shed).point_size(marker),
        )?
        .label("holds shed per s (right)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], shed));
    legend(chart.configure_series_labels())
}

/// The mean ledger insert_many latency per sample, log scale.
fn draw_insert(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    x: std::ops::Range<f64>,
    insert: &[Sample],
) -> anyhow::Result<()> {
    let values = insert.iter().map(|q| q.1);
    let mut chart = log_panel(
        area,
        x,
        log_ms_range(values, 3.0),
        "ledger insert (ms, log)",
        15,
    )?;
    if insert.is_empty() {
        return note(area, "no ledger inserts sampled");
    }
    let style = ShapeStyle::from(COLORS[4]).stroke_width(2);
    let runs: Vec<&[Sample]> = insert
        .chunk_by(|a, b| b.0 - a.0 <= GAP_SECS * 4.0)
        .collect();
    for (r, run) in runs.iter().enumerate() {
        let marker = if run.len() == 1 { 3 } else { 0 };
        let drawn = chart.draw_series(
            LineSeries::new(run.iter().map(|q| (q.0, q.1)), style).point_size(marker),
        )?;
        if r == 0 {
            drawn
                .label("insert_many, mean per sample")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
    }
    legend(chart.configure_series_labels())
}

/// One value (`value`: CPU or RSS) of every process, one line each.
fn draw_processes(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    x: std::ops::Range<f64>,
    processes: &[(&str, Vec<Sample>)],
    y_desc: &str,
    value: impl Fn(&Sample) -> f64,
) -> anyhow::Result<()> {
    let hi = processes
        .iter()
        .flat_map(|(_, p)| p.iter().map(&value))
        .fold(0.0f64, f64::max);
    let mut chart = panel(area, x, 0.0..(hi * 1.3).max(10.0), y_desc)?;
    if processes.iter().all(|(_, p)| p.is_empty()) {
        return note(area, "no resource samples");
    }
    for (i, (name, points)) in processes.iter().enumerate() {
        let style = ShapeStyle::from(COLORS[i % COLORS.len()]).stroke_width(2);
        let marker = if points.len() == 1 { 4 } else { 0 };
        chart
            .draw_series(
                LineSeries::new(points.iter().map(|q| (q.0, value(q))), style).point_size(marker),
            )?
            .label(name.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    legend(chart.configure_series_labels())
}

/// Every panel's legend: top right, on a light box.
fn legend<'a, 'b, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    mut labels: SeriesLabelStyle<'a, 'b, DB, CT>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    labels
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(|e| anyhow!("drawing a legend: {e}"))
}

/// A grey note in the middle of a panel that has nothing to draw.
fn note(area: &DrawingArea<BitMapBackend<'_>, Shift>, text: &str) -> anyhow::Result<()> {
    let (w, h) = area.dim_in_pixel();
    let grey = BLACK.mix(0.5);
    let style = TextStyle::from(("sans-serif", 20).into_font())
        .color(&grey)
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(
        text.to_string(),
        (w as i32 / 2, h as i32 / 2),
        style,
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

    /// Checks the signature and the IHDR chunk by hand; returns the file's size.
    fn assert_png(path: &Path, width: u32, height: u32) -> usize {
        let bytes = std::fs::read(path).expect("plot file written");
        assert!(
            bytes.len() > 24,
            "{} is too short for a PNG",
            path.display()
        );
        assert_eq!(bytes[..8], PNG_SIGNATURE, "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR", "first chunk is IHDR");
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), (width, height), "IHDR width and height");
        bytes.len()
    }

    fn out(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("shelfsync-festival-plot-{name}.png"));
        let _ = std::fs::remove_file(&path);
        path
    }

    /// A made-up run: three operations over 30 s with a slow patch at 12..18 s.
    fn sample_run() -> (Vec<Series>, Resources) {
        let ops = [
            ("hold", 1.2, 4.0),
            ("confirm", 2.5, 9.0),
            ("push_sse", 12.0, 60.0),
        ];
        let series = ops
            .iter()
            .enumerate()
            .map(|(k, &(name, p50, p99))| Series {
                name: name.to_string(),
                points: (0..30)
                    .map(|s| {
                        let t = s as f64 + 0.5;
                        let wobble = 1.0 + 0.25 * (t * 0.9 + k as f64).sin();
                        let slow: f64 = if (12.0..18.0).contains(&t) { 6.0 } else { 1.0 };
                        (t, p50 * wobble * slow.sqrt(), p99 * wobble * slow)
                    })
                    .collect(),
            })
            .collect();
        let service = (0..30)
            .map(|s| {
                let t = s as f64 + 0.5;
                let cpu = 40.0 + 90.0 * (1.0 - (-(t / 6.0)).exp()) + 10.0 * (t * 1.3).sin();
                let rss = 48.0 + t * 0.9;
                (t, cpu, rss)
            })
            .collect();
        let redis = (0..30).map(|s| (s as f64, 20.0, 12.0)).collect();
        let resources = Resources {
            processes: vec![("service".into(), service), ("redis".into(), redis)],
            // The lag passes 2 s at 12..18 s, and holds are shed meanwhile.
            ledger: (0..30)
                .map(|s| {
                    let t = s as f64;
                    let slow = (12.0..18.0).contains(&t);
                    (
                        t,
                        if slow { 2.4 } else { 0.1 },
                        if slow { 800.0 } else { 0.0 },
                    )
                })
                .collect(),
            insert: (0..30).map(|s| (s as f64, 5.0 + s as f64)).collect(),
        };
        (series, resources)
    }

    #[test]
    fn plot_renders_three_series_over_30s() {
        let (series, resources) = sample_run();
        let path = out("three-series");
        latency_png(
            &path,
            "festival: latency over time (made-up data)",
            &series,
            &resources,
        )
        .expect("plot renders");
        let size = assert_png(&path, WIDTH, HEIGHT);
        assert!(
            size > 8 * 1024,
            "a plot with text and lines is only {size} bytes"
        );
    }

    #[test]
    fn plot_survives_empty_and_degenerate_input() {
        // Nothing at all.
        let path = out("empty");
        latency_png(&path, "empty run", &[], &Resources::default()).expect("empty plot");
        assert_png(&path, WIDTH, HEIGHT);

        // Named series without points, and no resource samples.
        let path = out("empty-series");
        let series = vec![
            Series {
                name: "hold".into(),
                points: vec![],
            },
            Series {
                name: "confirm".into(),
                points: vec![],
            },
        ];
        latency_png(&path, "no samples", &series, &Resources::default())
            .expect("plot of empty series");
        assert_png(&path, WIDTH, HEIGHT);

        // One point each; zero, negative, NaN and infinite values; out-of-order times.
        let path = out("degenerate");
        let series = vec![
            Series {
                name: "hold".into(),
                points: vec![(3.0, 0.0, -1.0)],
            },
            Series {
                name: "confirm".into(),
                points: vec![
                    (5.0, 2.0, 8.0),
                    (1.0, f64::NAN, 0.0),
                    (f64::NAN, 1.0, 1.0),
                    (2.0, 1.0, f64::INFINITY),
                ],
            },
        ];
        let resources = Resources {
            processes: vec![
                ("service".into(), vec![(2.0, 150.0, 64.0)]),
                ("broker".into(), vec![]),
            ],
            ledger: vec![(1.0, f64::NAN, 3.0), (2.0, 0.5, 0.0)],
            insert: vec![(4.0, 0.0)],
        };
        latency_png(&path, "degenerate", &series, &resources).expect("degenerate plot");
        assert_png(&path, WIDTH, HEIGHT);
    }

    /// Six operations over 15 minutes of noisy one-second buckets: dense dashed lines and a
    /// legend of six rows still render.
    #[test]
    fn plot_renders_a_long_dense_run() {
        let names = [
            "hold", "confirm", "cancel", "pos_sale", "whatsapp", "push_sse",
        ];
        let series: Vec<Series> = names
            .iter()
            .enumerate()
            .map(|(k, name)| Series {
                name: name.to_string(),
                points: (0..900)
                    .map(|s| {
                        let t = s as f64;
                        let noise = ((t * 12.9898 + k as f64 * 78.233).sin() * 43758.5453)
                            .fract()
                            .abs();
                        let base = 0.8 * (k as f64 + 1.0);
                        let spike = if (300.0..420.0).contains(&t) {
                            20.0
                        } else {
                            1.0
                        };
                        (
                            t,
                            base * (1.0 + noise),
                            base * 4.0 * (1.0 + 2.0 * noise) * spike,
                        )
                    })
                    .collect(),
            })
            .collect();
        let service = (0..900)
            .map(|s| {
                let t = s as f64;
                (t, 80.0 + 60.0 * (t / 50.0).sin().abs(), 50.0 + t * 0.1)
            })
            .collect();
        let resources = Resources {
            processes: vec![("service".into(), service)],
            ledger: (0..900)
                .map(|s| (s as f64, (s % 60) as f64 / 20.0, 0.0))
                .collect(),
            insert: (0..900).map(|s| (s as f64, 2.0 + (s % 7) as f64)).collect(),
        };
        let path = out("long-run");
        latency_png(&path, "festival: 15 min, 6 operations", &series, &resources)
            .expect("long run renders");
        let size = assert_png(&path, WIDTH, HEIGHT);
        assert!(size > 8 * 1024, "a dense plot is only {size} bytes");
    }

    #[test]
    fn plot_reports_an_unwritable_path() {
        let (series, resources) = sample_run();
        let path = Path::new("/nonexistent-dir/for/sure/plot.png");
        // With the font there, the error can only be the path's.
        ensure_font().expect("the plot font (fonts-dejavu-core)");
        assert!(latency_png(path, "x", &series, &resources).is_err());
    }

    #[test]
    fn ms_labels_are_plain_numbers() {
        assert_eq!(fmt_ms(&0.05), "0.05");
        assert_eq!(fmt_ms(&0.5), "0.5");
        assert_eq!(fmt_ms(&2.0), "2");
        assert_eq!(fmt_ms(&2.5), "2.5");
        assert_eq!(fmt_ms(&200.0), "200");
    }
}
