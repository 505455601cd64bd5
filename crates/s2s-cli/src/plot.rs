//! `s2s plot`: the training curves of a run folder (its `metrics.jsonl`, written by
//! `s2s train --out DIR`) drawn as a PNG of three panels stacked vertically, all against the
//! training step: the training and validation losses, the metric that selects the best
//! checkpoint (with the validations that made a new best marked), and the learning rate.
//!
//! Parsing ([`read_metrics`]) is kept apart from drawing ([`render`], [`write_plot`]).

use crate::align::{register_font, write_png, FONT};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::{Map, Value};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The file of a run folder that holds its events, one JSON object per line.
pub const METRICS: &str = "metrics.jsonl";
/// The image written when `--out` is not given, inside the run folder.
pub const DEFAULT_OUT: &str = "curves.png";
/// Width of the image, in pixels.
pub const WIDTH: u32 = 1000;
/// Height of the image, in pixels.
pub const HEIGHT: u32 = 900;

/// Arguments of `s2s plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Training run folder (holds metrics.jsonl).
    pub dir: PathBuf,
    /// The PNG to write (default: DIR/curves.png).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

/// The curves of a training run, each a list of `(step, value)` points in step order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curves {
    /// Mean training loss of each logged window (`train` events).
    pub train_loss: Vec<(f64, f64)>,
    /// Validation loss (`valid` events).
    pub valid_loss: Vec<(f64, f64)>,
    /// Learning rate (`train` events).
    pub lr: Vec<(f64, f64)>,
    /// The metric that selects the best checkpoint, as named by the last validation's
    /// `best_metric` (`wer`, `per`, `exact`, `bleu`, `chrf`, `loss`); `None` before the first
    /// validation.
    pub metric: Option<String>,
    /// That metric at each validation, in the unit of [`metric_label`] (error rates and exact
    /// match as percentages, BLEU and chrF as logged).
    pub metric_values: Vec<(f64, f64)>,
    /// The validations that made a new best checkpoint (a subset of `metric_values`).
    pub best: Vec<(f64, f64)>,
}

/// Draws the curves of `args.dir` and writes them as a PNG.
pub fn run(args: PlotArgs) -> Result<()> {
    let curves = read_metrics(&args.dir.join(METRICS))?;
    let out = args.out.unwrap_or_else(|| args.dir.join(DEFAULT_OUT));
    write_plot(&curves, &out, WIDTH, HEIGHT)?;
    eprintln!("{}: training curves ({WIDTH}x{HEIGHT} px)", out.display());
    Ok(())
}

/// The field of a `valid` event that holds metric `name`, the factor it is plotted with,
/// and the axis label.
fn metric_field(name: &str) -> (&str, f64, String) {
    match name {
        "wer" => ("wer", 100.0, "WER (%)".into()),
        "per" => ("per", 100.0, "PER (%)".into()),
        "exact" => ("exact_match", 100.0, "exact match (%)".into()),
        "bleu" => ("bleu", 1.0, "BLEU".into()),
        "chrf" => ("chrf", 1.0, "chrF".into()),
        "loss" => ("loss", 1.0, "validation loss".into()),
        other => (other, 1.0, other.into()),
    }
}

/// The axis label of best metric `name` (`"wer"` → `"WER (%)"`).
pub fn metric_label(name: &str) -> String {
    metric_field(name).2
}

/// A number field of an event: `None` when absent or `null` (a NaN is logged as `null`).
fn number(event: &Map<String, Value>, key: &str) -> Result<Option<f64>, String> {
    match event.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(format!("{key} is not a number: {v}")),
        },
    }
}

/// Reads the `train` and `valid` events of a `metrics.jsonl` file; other events (`resume`,
/// `end`, and any added later) are skipped. A line that is not a JSON object, or a
/// train/valid event without a `step`, is an error naming the file and the line.
pub fn read_metrics(path: &Path) -> Result<Curves> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    if text.trim().is_empty() {
        bail!("{}: empty (no events logged yet)", path.display());
    }
    let mut curves = Curves::default();
    // (line, step, event) of each validation; the metric is known after the last one.
    let mut valids: Vec<(usize, f64, Map<String, Value>)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), n + 1);
        if line.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(line).map_err(|e| anyhow!("{}: invalid JSON: {e}", at()))?;
        let Value::Object(event) = value else {
            bail!("{}: not a JSON object", at());
        };
        let kind = match event.get("event").and_then(Value::as_str) {
            Some(kind @ ("train" | "valid")) => kind.to_owned(),
            _ => continue,
        };
        let step = match event.get("step") {
            None | Some(Value::Null) => bail!("{}: {kind} event without a step", at()),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| anyhow!("{}: step is not a number: {v}", at()))?,
        };
        let field = |key: &str| number(&event, key).map_err(|e| anyhow!("{}: {e}", at()));
        if kind == "train" {
            if let Some(loss) = field("loss")? {
                curves.train_loss.push((step, loss));
            }
            if let Some(lr) = field("lr")? {
                curves.lr.push((step, lr));
            }
        } else {
            if let Some(loss) = field("loss")? {
                curves.valid_loss.push((step, loss));
            }
            valids.push((n + 1, step, event));
        }
    }
    let metric = valids.iter().rev().find_map(|(_, _, e)| {
        e.get("best_metric")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    if let Some(name) = &metric {
        let (key, scale, _) = metric_field(name);
        for (line, step, event) in &valids {
            let value = number(event, key)
                .map_err(|e| anyhow!("{}:{line}: {e}", path.display()))?
                .map(|v| v * scale);
            let Some(value) = value else { continue };
            curves.metric_values.push((*step, value));
            let best = event.get("best").and_then(Value::as_bool) == Some(true);
            let same_metric = event.get("best_metric").and_then(Value::as_str) == Some(name);
            if best && same_metric {
                curves.best.push((*step, value));
            }
        }
    }
    curves.metric = metric;
    if curves.train_loss.is_empty() && curves.lr.is_empty() && valids.is_empty() {
        bail!(
            "{}: no train or valid events yet (nothing to draw)",
            path.display()
        );
    }
    for series in [
        &mut curves.train_loss,
        &mut curves.valid_loss,
        &mut curves.lr,
        &mut curves.metric_values,
        &mut curves.best,
    ] {
        series.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ok(curves)
}

/// Draws the curves and writes them as a `width` x `height` PNG, through a temporary file
/// beside `out` that is renamed over it, so that a failed run leaves no half-written image.
pub fn write_plot(curves: &Curves, out: &Path, width: u32, height: u32) -> Result<()> {
    let rgb = render(curves, width, height)?;
    write_png(out, &rgb, width, height)
}

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VALID: RGBColor = RGBColor(214, 39, 40);
const METRIC: RGBColor = RGBColor(44, 160, 44);
const BEST: RGBColor = RGBColor(255, 127, 14);
const LR: RGBColor = RGBColor(148, 103, 189);
/// Series with at most this many points get a marker on every point.
const MARK_UP_TO: usize = 60;

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the curves failed: {e:?}")
}

/// The smallest and largest value of `points` (through `get`), or `None` for no points.
fn bounds<'a>(
    points: impl IntoIterator<Item = &'a (f64, f64)>,
    get: fn(&(f64, f64)) -> f64,
) -> Option<(f64, f64)> {
    points.into_iter().map(get).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// An axis range around `[lo, hi]` with a margin of `frac` of its width on both sides, and a
/// non-empty one around a single value.
fn padded((lo, hi): (f64, f64), frac: f64) -> Range<f64> {
    let pad = if hi > lo {
        (hi - lo) * frac
    } else if lo == 0.0 {
        1.0
    } else {
        lo.abs() * 0.1
    };
    (lo - pad)..(hi + pad)
}

/// A tick label: at most three decimals, without trailing zeros.
fn tick(v: &f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// A tick label in scientific notation (learning rates).
fn tick_sci(v: &f64) -> String {
    if *v == 0.0 {
        "0".into()
    } else {
        format!("{v:.1e}")
    }
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A panel's chart: title, axes, grid and tick labels, every text in the bundled font.
fn chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    x: Range<f64>,
    y: Range<f64>,
    y_desc: &str,
    y_tick: &dyn Fn(&f64) -> String,
) -> Result<Chart<'a, DB>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(10)
        .margin_right(20)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 14))
        .x_desc("step")
        .y_desc(y_desc)
        .x_label_formatter(&tick)
        .y_label_formatter(y_tick)
        .draw()
        .map_err(draw_err)?;
    Ok(chart)
}

/// A line through `points` labelled `label` in the legend, with a marker on every point
/// when there are few (so that a single point shows).
fn line<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    points: &[(f64, f64)],
    color: RGBColor,
    label: &str,
) -> Result<()> {
    if points.is_empty() {
        return Ok(());
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            points.to_vec(),
            color.stroke_width(2),
        )))
        .map_err(draw_err)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    if points.len() <= MARK_UP_TO {
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// The legend box in the panel's upper right corner.
fn legend<'a, DB: DrawingBackend + 'a>(chart: &mut Chart<'a, DB>) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(draw_err)
}

/// A panel with a title and one line of text in its middle, for a curve without points.
fn empty_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    message: &str,
) -> Result<()> {
    let inner = area.titled(title, (FONT, 20)).map_err(draw_err)?;
    let (w, h) = inner.dim_in_pixel();
    let grey = BLACK.mix(0.6);
    let style = TextStyle::from((FONT, 16).into_font())
        .color(&grey)
        .pos(Pos::new(HPos::Center, VPos::Center));
    inner
        .draw(&Text::new(message, (w as i32 / 2, h as i32 / 2), style))
        .map_err(draw_err)
}

/// Draws the three panels into an RGB buffer of `width` x `height` pixels (3 bytes per
/// pixel, rows top to bottom).
pub fn render(curves: &Curves, width: u32, height: u32) -> Result<Vec<u8>> {
    if width < 300 || height < 300 {
        bail!("a plot of {width}x{height} px is too small (at least 300x300)");
    }
    register_font()?;
    let all = || {
        curves
            .train_loss
            .iter()
            .chain(&curves.valid_loss)
            .chain(&curves.lr)
            .chain(&curves.metric_values)
    };
    // One step axis for all panels, so that they line up.
    let steps = padded(bounds(all(), |p| p.0).unwrap_or((0.0, 1.0)), 0.02);
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        let panels = root.split_evenly((3, 1));
        let [loss_area, metric_area, lr_area] = panels.as_slice() else {
            bail!("the image could not be split into three panels");
        };

        let losses = curves.train_loss.iter().chain(&curves.valid_loss);
        match bounds(losses, |p| p.1) {
            Some(range) => {
                let mut chart = chart(
                    loss_area,
                    "loss",
                    steps.clone(),
                    padded(range, 0.05),
                    "loss",
                    &tick,
                )?;
                line(&mut chart, &curves.train_loss, TRAIN, "training loss")?;
                line(&mut chart, &curves.valid_loss, VALID, "validation loss")?;
                legend(&mut chart)?;
            }
            None => empty_panel(loss_area, "loss", "no loss logged yet")?,
        }

        match (&curves.metric, bounds(&curves.metric_values, |p| p.1)) {
            (Some(name), Some(range)) => {
                let label = metric_label(name);
                let mut chart = chart(
                    metric_area,
                    &format!("best metric: {label}"),
                    steps.clone(),
                    padded(range, 0.05),
                    &label,
                    &tick,
                )?;
                line(&mut chart, &curves.metric_values, METRIC, &label)?;
                if !curves.best.is_empty() {
                    chart
                        .draw_series(
                            curves
                                .best
                                .iter()
                                .map(|&p| Circle::new(p, 6, BEST.filled())),
                        )
                        .map_err(draw_err)?
                        .label("new best")
                        .legend(|(x, y)| Circle::new((x + 10, y), 5, BEST.filled()));
                }
                legend(&mut chart)?;
            }
            (Some(name), None) => empty_panel(
                metric_area,
                &format!("best metric: {}", metric_label(name)),
                "no value logged yet",
            )?,
            (None, _) => empty_panel(metric_area, "best metric", "no validation yet")?,
        }

        match bounds(&curves.lr, |p| p.1) {
            Some(range) => {
                let mut chart = chart(
                    lr_area,
                    "learning rate",
                    steps,
                    padded(range, 0.05),
                    "learning rate",
                    &tick_sci,
                )?;
                line(&mut chart, &curves.lr, LR, "learning rate")?;
            }
            None => empty_panel(lr_area, "learning rate", "no learning rate logged yet")?,
        }
        root.present().map_err(draw_err)?;
    }
    Ok(rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = r#"{"event":"train","step":10,"epoch":0,"loss":3.5,"lr":0.0005,"grad_norm":2.0,"tokens_per_second":1000.0,"elapsed_seconds":1.0}
{"event":"train","step":20,"epoch":0,"loss":2.5,"lr":0.001,"grad_norm":1.5,"tokens_per_second":1000.0,"elapsed_seconds":2.0}
{"event":"valid","step":20,"epoch":0,"train_loss":2.5,"loss":2.75,"perplexity":15.6,"exact_match":0.1,"wer":0.9,"per":0.5,"bleu":null,"chrf":20.0,"best_metric":"wer","best":true,"tokens_per_second":900.0,"elapsed_seconds":2.5}
{"event":"resume","step":20,"epoch":1}

{"event":"train","step":30,"epoch":1,"loss":1.5,"lr":0.0008,"grad_norm":1.0,"tokens_per_second":1000.0,"elapsed_seconds":3.0}
{"event":"gpu_memory","bytes":123}
{"event":"valid","step":30,"epoch":1,"train_loss":1.5,"loss":2.0,"perplexity":7.4,"exact_match":0.2,"wer":0.95,"per":0.4,"bleu":12.5,"chrf":30.0,"best_metric":"wer","best":false,"tokens_per_second":900.0,"elapsed_seconds":3.5}
{"event":"valid","step":40,"epoch":1,"train_loss":1.25,"loss":1.75,"perplexity":5.8,"exact_match":0.5,"wer":0.5,"per":0.25,"bleu":25.0,"chrf":40.0,"best_metric":"wer","best":true,"tokens_per_second":900.0,"elapsed_seconds":4.5}
{"event":"end","step":40,"outcome":"finished"}
"#;

    fn run_dir(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(METRICS), text).unwrap();
        dir
    }

    fn message(e: anyhow::Error) -> String {
        format!("{e:#}")
    }

    /// The width and height of a PNG file, after checking its signature.
    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let reader = decoder.read_info().unwrap();
        (reader.info().width, reader.info().height)
    }

    #[test]
    fn parses_every_event_kind() {
        let dir = run_dir(RUN);
        let c = read_metrics(&dir.path().join(METRICS)).unwrap();
        assert_eq!(c.train_loss, vec![(10.0, 3.5), (20.0, 2.5), (30.0, 1.5)]);
        assert_eq!(c.lr, vec![(10.0, 0.0005), (20.0, 0.001), (30.0, 0.0008)]);
        assert_eq!(c.valid_loss, vec![(20.0, 2.75), (30.0, 2.0), (40.0, 1.75)]);
        assert_eq!(c.metric.as_deref(), Some("wer"));
        assert_eq!(metric_label("wer"), "WER (%)");
        assert_eq!(
            c.metric_values,
            vec![(20.0, 90.0), (30.0, 95.0), (40.0, 50.0)]
        );
        assert_eq!(c.best, vec![(20.0, 90.0), (40.0, 50.0)]);
    }

    #[test]
    fn metrics_are_scaled_by_kind_and_nulls_skipped() {
        let dir = run_dir(&RUN.replace("\"wer\",", "\"bleu\","));
        let c = read_metrics(&dir.path().join(METRICS)).unwrap();
        assert_eq!(c.metric.as_deref(), Some("bleu"));
        // The first validation's BLEU is null (NaN): no point, and no best marker.
        assert_eq!(c.metric_values, vec![(30.0, 12.5), (40.0, 25.0)]);
        assert_eq!(c.best, vec![(40.0, 25.0)]);
        let dir = run_dir(&RUN.replace("\"wer\",", "\"exact\","));
        let c = read_metrics(&dir.path().join(METRICS)).unwrap();
        assert_eq!(
            c.metric_values,
            vec![(20.0, 10.0), (30.0, 20.0), (40.0, 50.0)]
        );
        assert_eq!(metric_label("exact"), "exact match (%)");
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let good = RUN.lines().next().unwrap();
        let read = |text: &str| {
            let dir = run_dir(text);
            message(read_metrics(&dir.path().join(METRICS)).unwrap_err())
        };
        let e = read(&format!("{good}\n{good}\n{{\"event\":\"train\",\"st\n"));
        assert!(e.contains("metrics.jsonl:3: invalid JSON"), "{e}");
        let e = read(&format!("{good}\n{{\"event\":\"valid\",\"loss\":1.0}}\n"));
        assert!(
            e.contains("metrics.jsonl:2: valid event without a step"),
            "{e}"
        );
        let e = read(&format!("{good}\n{}\n", good.replace("3.5", "\"x\"")));
        assert!(e.contains("metrics.jsonl:2: loss is not a number"), "{e}");
        let e = read(&format!("{good}\n[1, 2]\n"));
        assert!(e.contains("metrics.jsonl:2: not a JSON object"), "{e}");
        let e = read("");
        assert!(e.contains("metrics.jsonl: empty"), "{e}");
        let e = read("{\"event\":\"resume\",\"step\":0,\"epoch\":0}\n");
        assert!(e.contains("metrics.jsonl: no train or valid events"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = message(read_metrics(&dir.path().join(METRICS)).unwrap_err());
        assert!(e.contains("metrics.jsonl: cannot read"), "{e}");
    }

    #[test]
    fn draws_a_png_of_the_requested_size() {
        let dir = run_dir(RUN);
        run(PlotArgs {
            dir: dir.path().to_path_buf(),
            out: None,
        })
        .unwrap();
        let out = dir.path().join(DEFAULT_OUT);
        assert_eq!(png_size(&out), (WIDTH, HEIGHT));
        let curves = read_metrics(&dir.path().join(METRICS)).unwrap();
        let other = dir.path().join("small.png");
        write_plot(&curves, &other, 640, 480).unwrap();
        assert_eq!(png_size(&other), (640, 480));
        // Only the metrics and the two images: no temporary file is left behind.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec![DEFAULT_OUT, METRICS, "small.png"]);
        // The panels are drawn: the image is not blank.
        let rgb = render(&curves, 640, 480).unwrap();
        assert!(rgb.iter().any(|&b| b < 128));
    }

    #[test]
    fn draws_a_run_with_only_train_events() {
        let train: String = RUN
            .lines()
            .filter(|l| l.contains("\"train\""))
            .map(|l| format!("{l}\n"))
            .collect();
        let dir = run_dir(&train);
        let curves = read_metrics(&dir.path().join(METRICS)).unwrap();
        assert_eq!(curves.metric, None);
        assert!(curves.valid_loss.is_empty() && curves.metric_values.is_empty());
        let out = dir.path().join("train.png");
        run(PlotArgs {
            dir: dir.path().to_path_buf(),
            out: Some(out.clone()),
        })
        .unwrap();
        assert_eq!(png_size(&out), (WIDTH, HEIGHT));
    }

    #[test]
    fn draws_a_single_point_and_a_flat_curve() {
        let one = RUN.lines().next().unwrap();
        let dir = run_dir(one);
        let out = dir.path().join("one.png");
        let curves = read_metrics(&dir.path().join(METRICS)).unwrap();
        assert_eq!(curves.train_loss, vec![(10.0, 3.5)]);
        write_plot(&curves, &out, WIDTH, HEIGHT).unwrap();
        assert_eq!(png_size(&out), (WIDTH, HEIGHT));
        // One validation only, a constant learning rate of zero.
        let valid = RUN.lines().nth(2).unwrap();
        let flat = format!("{}\n{valid}\n", one.replace("0.0005", "0.0"));
        let dir = run_dir(&flat);
        let curves = read_metrics(&dir.path().join(METRICS)).unwrap();
        write_plot(&curves, &dir.path().join("flat.png"), WIDTH, HEIGHT).unwrap();
        assert!(render(&curves, 100, 100).is_err());
    }
}
