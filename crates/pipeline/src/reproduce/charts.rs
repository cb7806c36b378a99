//! The reproduction's figures: each row's seed-0 figures copied under the row's name, and the
//! privacy–utility and samples charts.

use std::path::Path;

use metrics::{Chart, ChartPoint, Series};

use super::catalogue::Curve;
use super::table::{CurvePoint, TableRow};
use crate::config::ExperimentConfig;
use crate::figures::FigureKind;
use crate::out_dir::write_file;
use crate::{PipelineError, Result};

/// Accuracy and FID against ε and λ_lip.
const PRIVACY_UTILITY: &str = "privacy-utility.png";
/// Accuracy and FID against synthetic samples per client.
const SAMPLES: &str = "samples.png";
/// The chart files (as opposed to the per-row figures).
pub(crate) const CHART_FILES: [&str; 2] = [PRIVACY_UTILITY, SAMPLES];

/// Copies the figures of `cfg`'s run in `run_dir` into `figures`, renamed after `row_key`.
pub(crate) fn copy_row_figures(
    cfg: &ExperimentConfig,
    run_dir: &Path,
    figures: &Path,
    row_key: &str,
) -> Result<Vec<String>> {
    FigureKind::of_run(cfg.analyses_training_images())
        .into_iter()
        .map(|kind| {
            let (from, to) = (run_dir.join(kind.of_strategy(cfg.strategy)), kind.file_name(row_key));
            std::fs::copy(&from, figures.join(&to)).map_err(|e| PipelineError::io(&from, e))?;
            Ok(to)
        })
        .collect()
}

/// A metric a chart panel plots.
type Metric = fn(&CurvePoint) -> Option<f64>;
const METRICS: [(&str, &str, Metric); 2] =
    [("accuracy", "accuracy %", |p| Some(100.0 * p.accuracy)), ("FID", "FID", |p| p.fid)];

fn line(label: &str, points: &[&CurvePoint], y: Metric) -> Series {
    Series {
        label: label.into(),
        points: points.iter().filter_map(|p| y(p).map(|v| ChartPoint { x: p.x, y: v, spread: 0.0 })).collect(),
    }
}

/// A reference drawn flat across the curve's x values.
fn flat(label: &str, xs: &[f64], y: Option<f64>) -> Option<Series> {
    y.map(|y| Series { label: label.into(), points: xs.iter().map(|&x| ChartPoint { x, y, spread: 0.0 }).collect() })
}

fn panel(title: String, x: &str, y: &str, main: Series, reference: Option<Series>) -> Option<Chart> {
    (!main.points.is_empty()).then(|| Chart {
        title,
        x_label: x.into(),
        y_label: y.into(),
        log_x: true,
        series: std::iter::once(main).chain(reference).collect(),
    })
}

/// privacy-utility.png (accuracy and FID against ε and λ_lip) and samples.png; panels without
/// data (FID skipped) are left out. Returns the files written.
pub(crate) fn write_charts(dir: &Path, table: &[TableRow], curves: &[(Curve, Vec<CurvePoint>)]) -> Result<Vec<String>> {
    let no_privacy = table.iter().find(|r| r.row == super::Row::AlignFl);
    let mut privacy_panels = Vec::new();
    let mut samples_panels = Vec::new();
    for (curve, points) in curves {
        let refs: Vec<&CurvePoint> = points.iter().collect();
        match curve {
            Curve::Epsilon => {
                let xs: Vec<f64> = points.iter().map(|p| p.x).collect();
                for (name, axis, y) in METRICS {
                    let reference = no_privacy.and_then(|r| if name == "FID" { r.fid } else { r.accuracy });
                    let scale = if name == "FID" { 1.0 } else { 100.0 };
                    privacy_panels.extend(panel(
                        format!("{name} vs ε"),
                        "ε",
                        axis,
                        line("DP-SGD (RDP)", &refs, y),
                        flat("no privacy", &xs, reference.map(|s| s.mean * scale)),
                    ));
                }
            }
            Curve::Lambda => {
                let (zero, penalised): (Vec<&CurvePoint>, Vec<&CurvePoint>) = refs.iter().partition(|p| p.x == 0.0);
                let xs: Vec<f64> = penalised.iter().map(|p| p.x).collect();
                for (name, axis, y) in METRICS {
                    privacy_panels.extend(panel(
                        format!("{name} vs λ_lip"),
                        "λ_lip",
                        axis,
                        line("LCD-VAE", &penalised, y),
                        flat("λ_lip = 0", &xs, zero.first().and_then(|p| y(p))),
                    ));
                }
            }
            Curve::Samples => {
                for (name, axis, y) in METRICS {
                    samples_panels.extend(panel(
                        format!("{name} vs samples per client"),
                        "synthetic samples per client",
                        axis,
                        line("ALIGN-FL", &refs, y),
                        None,
                    ));
                }
            }
        }
    }
    let mut written = Vec::new();
    for (name, panels) in [(PRIVACY_UTILITY, &privacy_panels), (SAMPLES, &samples_panels)] {
        if panels.is_empty() {
            continue;
        }
        write_file(&dir.join(name), metrics::line_charts(panels, 2)?)?;
        let vector = name.replace(".png", ".svg");
        write_file(&dir.join(&vector), metrics::line_charts_svg(panels, 2)?)?;
        written.extend([name.to_string(), vector]);
    }
    Ok(written)
}
