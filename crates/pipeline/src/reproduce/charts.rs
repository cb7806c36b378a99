//! The reproduction's figures: each row's seed-0 figures copied under the row's name, and the
//! privacy–utility, samples and sweeps charts.

use std::path::Path;

use metrics::{Chart, ChartPoint, Series};

use super::catalogue::Curve;
use super::table::{CurvePoint, Stat, TableRow};
use crate::config::ExperimentConfig;
use crate::figures::FigureKind;
use crate::out_dir::write_file;
use crate::{PipelineError, Result};

/// Accuracy and FID against ε (RDP and PLD) and λ_lip.
const PRIVACY_UTILITY: &str = "privacy-utility.png";
/// Accuracy and FID against synthetic samples per client.
const SAMPLES: &str = "samples.png";
/// Accuracy (and FID) against the latent dimension, the server's epochs and the round.
const SWEEPS: &str = "sweeps.png";
/// The chart files (as opposed to the per-row figures).
pub(crate) const CHART_FILES: [&str; 3] = [PRIVACY_UTILITY, SAMPLES, SWEEPS];

/// Copies the figures of `cfg`'s run in `run_dir` into `figures`, renamed after `row_key`; the
/// names of those copied.
pub(crate) fn copy_row_figures(
    cfg: &ExperimentConfig,
    run_dir: &Path,
    figures: &Path,
    row_key: &str,
) -> Result<Vec<String>> {
    let mut copied = Vec::new();
    for kind in FigureKind::of_run(cfg.analyses_training_images()) {
        let (from, to) = (run_dir.join(kind.of_strategy(cfg.strategy)), kind.file_name(row_key));
        match std::fs::copy(&from, figures.join(&to)) {
            Ok(_) => copied.push(to),
            // A cell made before this kind of figure existed (the SVG latent plots) has none.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PipelineError::io(&from, e)),
        }
    }
    Ok(copied)
}

/// A metric a chart panel plots, and its scale.
type Metric = fn(&CurvePoint) -> Option<Stat>;
const METRICS: [(&str, &str, Metric, f64); 2] =
    [("accuracy", "accuracy %", |p| p.accuracy, 100.0), ("FID", "FID", |p| p.fid, 1.0)];

/// A curve's points as a line, mean ± standard deviation over the seeds.
fn line(label: &str, points: &[CurvePoint], y: Metric, scale: f64) -> Series {
    let point =
        |p: &CurvePoint| y(p).map(|s| ChartPoint { x: p.x, y: s.mean * scale, spread: s.std.unwrap_or(0.0) * scale });
    Series { label: label.into(), points: points.iter().filter_map(point).collect() }
}

/// A reference drawn flat across `xs`.
fn flat(label: &str, xs: &[f64], y: Option<f64>) -> Option<Series> {
    y.map(|y| Series { label: label.into(), points: xs.iter().map(|&x| ChartPoint { x, y, spread: 0.0 }).collect() })
}

/// A panel of `lines` (and a reference), if any line has points.
fn panel(title: String, curve: Curve, y: &str, lines: Vec<Series>, reference: Option<Series>) -> Option<Chart> {
    let lines: Vec<Series> = lines.into_iter().filter(|l| !l.points.is_empty()).collect();
    (!lines.is_empty()).then(|| Chart {
        title,
        x_label: curve.title_and_axis().1.into(),
        y_label: y.into(),
        log_x: curve.log_x(),
        series: lines.into_iter().chain(reference).collect(),
    })
}

/// privacy-utility.png (accuracy and FID against ε under both accountants, and λ_lip),
/// samples.png and sweeps.png (latent dimension of clients and server or of the server alone,
/// server epochs, rounds), each also as SVG; panels without data (FID skipped, curves not asked
/// for) are left out. Returns the files written.
pub(crate) fn write_charts(dir: &Path, table: &[TableRow], curves: &[(Curve, Vec<CurvePoint>)]) -> Result<Vec<String>> {
    let points = |c: Curve| curves.iter().find(|(k, _)| *k == c).map_or(&[][..], |(_, p)| p.as_slice());
    let no_privacy = table.iter().find(|r| r.row == super::Row::AlignFl);
    let mut privacy = Vec::new();
    let mut samples = Vec::new();
    let mut sweeps = Vec::new();
    let mut epsilon_xs: Vec<f64> =
        points(Curve::Epsilon).iter().chain(points(Curve::EpsilonPld)).map(|p| p.x).collect();
    epsilon_xs.sort_by(f64::total_cmp);
    epsilon_xs.dedup();
    let (zero, penalised): (Vec<CurvePoint>, Vec<CurvePoint>) =
        points(Curve::Lambda).iter().cloned().partition(|p| p.x == 0.0);
    let lambda_xs: Vec<f64> = penalised.iter().map(|p| p.x).collect();
    for (name, axis, y, scale) in METRICS {
        let reference = no_privacy.and_then(|r| if name == "FID" { r.fid } else { r.accuracy });
        privacy.extend(panel(
            format!("{name} vs ε"),
            Curve::Epsilon,
            axis,
            vec![
                line("DP-SGD (RDP)", points(Curve::Epsilon), y, scale),
                line("DP-SGD (PLD)", points(Curve::EpsilonPld), y, scale),
            ],
            flat("no privacy", &epsilon_xs, reference.map(|s| s.mean * scale)),
        ));
        privacy.extend(panel(
            format!("{name} vs λ_lip"),
            Curve::Lambda,
            axis,
            vec![line("LCD-VAE", &penalised, y, scale)],
            flat("λ_lip = 0", &lambda_xs, zero.first().and_then(y).map(|s| s.mean * scale)),
        ));
        samples.extend(panel(
            format!("{name} vs samples per client"),
            Curve::Samples,
            axis,
            vec![line("ALIGN-FL", points(Curve::Samples), y, scale)],
            None,
        ));
        sweeps.extend(panel(
            format!("{name} vs latent dimension"),
            Curve::Latent,
            axis,
            vec![
                line("clients and server", points(Curve::Latent), y, scale),
                line("clients and server, DP", points(Curve::LatentDp), y, scale),
                line("server only", points(Curve::ServerLatent), y, scale),
                line("server only, DP", points(Curve::ServerLatentDp), y, scale),
            ],
            None,
        ));
        for (curve, what) in [(Curve::ServerEpochs, "server epochs"), (Curve::Rounds, "round")] {
            sweeps.extend(panel(
                format!("{name} vs {what}"),
                curve,
                axis,
                vec![line("ALIGN-FL", points(curve), y, scale)],
                None,
            ));
        }
    }
    let mut written = Vec::new();
    for (name, panels) in [(PRIVACY_UTILITY, &privacy), (SAMPLES, &samples), (SWEEPS, &sweeps)] {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A cell made before the SVG latent plots existed still gives the table its PNG figures.
    #[test]
    fn a_cell_without_some_figure_kind_copies_the_others() {
        let dir = std::env::temp_dir().join(format!("align-fl-row-figures-{}", std::process::id()));
        let (run, figures) = (dir.join("run"), dir.join("figures"));
        std::fs::create_dir_all(&run).unwrap();
        std::fs::create_dir_all(&figures).unwrap();
        let cfg = ExperimentConfig::default();
        for kind in FigureKind::of_run(cfg.analyses_training_images()) {
            if kind != FigureKind::LatentVector {
                std::fs::write(run.join(kind.of_strategy(cfg.strategy)), b"png").unwrap();
            }
        }
        let copied = copy_row_figures(&cfg, &run, &figures, "align-fl").unwrap();
        assert_eq!(copied, ["samples-align-fl.png", "latent-align-fl.png", "outliers-align-fl.png"]);
        assert!(copied.iter().all(|f| figures.join(f).is_file()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
