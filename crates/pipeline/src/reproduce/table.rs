//! The table and the curves from the finished cells: statistics over seeds, the sentence per row
//! against the paper, and `table.md` / `table.json`.

use std::fmt::Write as _;
use std::ops::Range;

use serde::Serialize;

use super::catalogue::{Curve, PaperNumbers, Row, PAPER_ALIGN_FID};
use super::cells::CellResult;
use super::Settings;
use crate::config::ExperimentConfig;

/// Mean and sample standard deviation (None for one value).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct Stat {
    pub mean: f64,
    pub std: Option<f64>,
    pub n: usize,
}

pub(crate) fn stat(values: &[f64]) -> Option<Stat> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = (n > 1).then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
    Some(Stat { mean, std, n })
}

/// One row of the table, over the seeds that finished.
#[derive(Debug, Serialize)]
pub(crate) struct TableRow {
    #[serde(skip)]
    pub row: Row,
    pub key: &'static str,
    pub method: &'static str,
    pub seeds: usize,
    pub fid: Option<Stat>,
    pub accuracy: Option<Stat>,
    pub f1: Option<Stat>,
    pub lipschitz_decoder: Option<Stat>,
    pub outliers_mapped_client: Option<Stat>,
    pub outliers_mapped_global: Option<Stat>,
    pub uplink_bytes_per_round: usize,
    pub epsilon_spent: Option<f64>,
    pub guarantee_holds: Option<bool>,
    pub wall_seconds: f64,
    pub paper: PaperNumbers,
    pub comparison: String,
}

/// A finished cell's result by its configuration.
pub(crate) type Lookup<'a> = dyn Fn(&ExperimentConfig) -> Option<&'a CellResult> + 'a;

/// The table's rows over `seeds`; with `paper_base` (the paper protocol, where the paper's numbers
/// apply) each row is set against the paper's numbers and names what it changes from the paper's
/// protocol.
pub(crate) fn build_table(
    rows: &[Row],
    seeds: Range<u64>,
    base: &ExperimentConfig,
    paper_base: Option<&ExperimentConfig>,
    lookup: &Lookup<'_>,
) -> Vec<TableRow> {
    rows.iter()
        .map(|&r| {
            let paper = if paper_base.is_some() { r.paper() } else { PaperNumbers::default() };
            let changes = paper_base.map_or(Vec::new(), |p| {
                r.config(base, seeds.start).differences_from(&r.config(p, seeds.start), "paper protocol")
            });
            let runs: Vec<&CellResult> = seeds.clone().filter_map(|s| lookup(&r.config(base, s))).collect();
            let collect =
                |f: &dyn Fn(&CellResult) -> Option<f64>| stat(&runs.iter().filter_map(|c| f(c)).collect::<Vec<_>>());
            let accuracy = collect(&|c| Some(c.accuracy));
            let f1 = collect(&|c| Some(c.f1));
            let fid = collect(&|c| c.fid);
            let eps: Vec<f64> = runs.iter().filter_map(|c| c.epsilon_spent).collect();
            let holds: Vec<bool> = runs.iter().filter_map(|c| c.guarantee_holds).collect();
            TableRow {
                row: r,
                key: r.key(),
                method: r.label(),
                seeds: runs.len(),
                fid,
                accuracy,
                f1,
                lipschitz_decoder: collect(&|c| Some(c.lipschitz_decoder)),
                outliers_mapped_client: collect(&|c| c.outliers_mapped_client),
                outliers_mapped_global: collect(&|c| c.outliers_mapped_global),
                uplink_bytes_per_round: runs.first().map_or(0, |c| c.uplink_bytes_per_round),
                epsilon_spent: eps.iter().cloned().reduce(f64::max),
                guarantee_holds: (!holds.is_empty()).then(|| holds.iter().all(|&h| h)),
                wall_seconds: runs.iter().map(|c| c.wall_seconds).sum::<f64>() / runs.len().max(1) as f64,
                paper,
                comparison: if runs.is_empty() {
                    "No run of this row finished (see the failed experiments below).".into()
                } else {
                    compare_with_paper(r, &changes, paper, accuracy, f1, fid)
                },
            }
        })
        .collect()
}

/// The settings the row changes from the paper protocol, one sentence per measured difference
/// from the paper's number, then the row's note.
pub(crate) fn compare_with_paper(
    r: Row,
    changes: &[String],
    paper: PaperNumbers,
    accuracy: Option<Stat>,
    f1: Option<Stat>,
    fid: Option<Stat>,
) -> String {
    let mut parts = Vec::new();
    if !changes.is_empty() {
        parts.push(format!("Changed from the paper protocol: {}.", changes.join("; ")));
    }
    for (what, ours, paper) in [("Accuracy", accuracy, paper.accuracy), ("F1", f1, paper.f1)] {
        if let (Some(o), Some(p)) = (ours, paper) {
            let d = 100.0 * o.mean - p;
            parts.push(format!(
                "{what} {:.2} % vs the paper's {p:.2} % ({} by {:.2} points).",
                100.0 * o.mean,
                if d < 0.0 { "lower" } else { "higher" },
                d.abs()
            ));
        }
    }
    if let (Some(o), Some(p)) = (fid, paper.fid) {
        parts.push(format!(
            "FID {:.2} vs the paper's {p:.2}; the scales differ (the paper used torchvision's Inception weights, we use the FID graph).",
            o.mean
        ));
    }
    parts.push(r.note().to_string());
    parts.join(" ")
}

/// One point of a curve, over the seeds that finished.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct CurvePoint {
    pub x: f64,
    pub seeds: usize,
    pub accuracy: Option<Stat>,
    pub f1: Option<Stat>,
    pub fid: Option<Stat>,
    pub lipschitz_decoder: Option<Stat>,
    /// Largest ε any client spent, over the seeds.
    pub epsilon_spent: Option<f64>,
}

/// Each curve's points with at least one finished seed. The rounds curve reads round x of its
/// one run per seed (no FID or Lipschitz estimate per round).
pub(crate) fn build_curves(
    curves: &[Curve],
    seeds: Range<u64>,
    base: &ExperimentConfig,
    lookup: &Lookup<'_>,
) -> Vec<(Curve, Vec<CurvePoint>)> {
    curves
        .iter()
        .map(|&curve| {
            let points = curve
                .xs()
                .iter()
                .filter_map(|&x| {
                    let cells: Vec<&CellResult> =
                        seeds.clone().filter_map(|seed| lookup(&curve.point(base, x, seed).1)).collect();
                    let of = |f: fn(&CellResult) -> Option<f64>| {
                        stat(&cells.iter().filter_map(|c| f(c)).collect::<Vec<_>>())
                    };
                    let point = if curve == Curve::Rounds {
                        let round = x as usize - 1;
                        let accuracy: Vec<f64> =
                            cells.iter().filter_map(|c| c.round_accuracy.get(round).copied()).collect();
                        let f1: Vec<f64> = cells.iter().filter_map(|c| c.round_f1.get(round).copied()).collect();
                        CurvePoint {
                            x,
                            seeds: accuracy.len(),
                            accuracy: stat(&accuracy),
                            f1: stat(&f1),
                            fid: None,
                            lipschitz_decoder: None,
                            epsilon_spent: None,
                        }
                    } else {
                        CurvePoint {
                            x,
                            seeds: cells.len(),
                            accuracy: of(|c| Some(c.accuracy)),
                            f1: of(|c| Some(c.f1)),
                            fid: of(|c| c.fid),
                            lipschitz_decoder: of(|c| Some(c.lipschitz_decoder)),
                            epsilon_spent: cells.iter().filter_map(|c| c.epsilon_spent).reduce(f64::max),
                        }
                    };
                    (point.seeds > 0).then_some(point)
                })
                .collect();
            (curve, points)
        })
        .collect()
}

fn cell_text(s: Option<Stat>, scale: f64, digits: usize) -> String {
    match s {
        None => "—".into(),
        Some(Stat { mean, std: Some(sd), .. }) => format!("{:.digits$} ± {:.digits$}", mean * scale, sd * scale),
        Some(Stat { mean, .. }) => format!("{:.digits$}", mean * scale),
    }
}

/// FID's text, naming how many of the `seeds` it is over where some finished without FID
/// (`--no-fid`).
fn fid_text(fid: Option<Stat>, seeds: usize) -> String {
    match fid {
        Some(f) if f.n < seeds => format!("{} ({} of {seeds} seeds)", cell_text(fid, 1.0, 2), f.n),
        _ => cell_text(fid, 1.0, 2),
    }
}

fn paper_cell(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.2}"))
}

/// The rows' table, its footnote and the sentence per row.
fn rows_markdown(md: &mut String, s: &Settings, table: &[TableRow]) {
    let _ = writeln!(
        md,
        "| method | FID | accuracy % | F1 % | decoder Lipschitz | outliers mapped to typical, client 0 / global % | uplink MB / round | ε spent | guarantee | paper accuracy % | paper F1 % | paper FID | wall s / run |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|");
    let comparable = s.paper_comparable();
    for r in table {
        let paper_fid = match r.paper.fid {
            Some(f) => format!("{f:.2}"),
            None if comparable && r.row.in_paper_fid_range() => {
                format!("{:.2}–{:.2}†", PAPER_ALIGN_FID.0, PAPER_ALIGN_FID.1)
            }
            None => "—".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} / {} | {:.2} | {} | {} | {} | {} | {paper_fid} | {:.0} |",
            r.method,
            fid_text(r.fid, r.accuracy.map_or(0, |a| a.n)),
            cell_text(r.accuracy, 100.0, 2),
            cell_text(r.f1, 100.0, 2),
            cell_text(r.lipschitz_decoder, 1.0, 2),
            cell_text(r.outliers_mapped_client, 100.0, 1),
            cell_text(r.outliers_mapped_global, 100.0, 1),
            r.uplink_bytes_per_round as f64 / 1e6,
            r.epsilon_spent.map_or("—".into(), |e| format!("{e:.3}")),
            match r.guarantee_holds {
                Some(true) => "holds",
                Some(false) => "does not hold",
                None => "none claimed",
            },
            paper_cell(r.paper.accuracy),
            paper_cell(r.paper.f1),
            r.wall_seconds
        );
    }
    let _ = writeln!(
        md,
        "\nMean ± sample standard deviation over seeds. Our FID uses the standard FID Inception graph, so it is on the \
         pytorch-fid scale, not the paper's. LCD-VAE is empirical privacy: no ε is claimed for it. {}\n",
        if comparable {
            "† DESIGN.md gives the paper's FID only as the range over its ALIGN-FL variants."
        } else if s.quick {
            "The paper's columns are empty: its numbers are for the full protocol, which this run changes."
        } else {
            "The paper's columns are empty: DESIGN.md gives the paper's numbers for MNIST only."
        }
    );
    let _ = writeln!(md, "## {}\n", if comparable { "Against the paper, row by row" } else { "Notes, row by row" });
    for r in table {
        let _ = writeln!(md, "* **{}**: {}", r.method, r.comparison);
    }
}

/// `table.md`: the protocol, the table, the sentence per row, the curves and the figures.
pub(crate) fn markdown(
    s: &Settings,
    base: &ExperimentConfig,
    table: &[TableRow],
    curves: &[(Curve, Vec<CurvePoint>)],
    figures: &[String],
    machine: &str,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# ALIGN-FL reproduction: {}\n", base.dataset.display_name());
    let _ = writeln!(
        md,
        "{}: {} clients, {} round(s), {} synthetic samples per client, {} per row and curve point{machine}. \
         Made by `{}`.\n",
        s.protocol_label(),
        base.partition.clients,
        base.rounds,
        base.server.synthetic_samples,
        s.seeds_label(),
        s.command_line()
    );
    if !table.is_empty() {
        rows_markdown(&mut md, s, table);
    }
    for (curve, points) in curves {
        let (title, x) = curve.title_and_axis();
        let _ = writeln!(md, "\n## {title}\n");
        let _ = writeln!(md, "| {x} | accuracy % | F1 % | FID | decoder Lipschitz | ε spent | seeds |");
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|");
        for p in points {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                p.x,
                cell_text(p.accuracy, 100.0, 2),
                cell_text(p.f1, 100.0, 2),
                fid_text(p.fid, p.seeds),
                cell_text(p.lipschitz_decoder, 1.0, 2),
                p.epsilon_spent.map_or("—".into(), |e| format!("{e:.3}")),
                p.seeds
            );
        }
    }
    let _ = writeln!(md, "\n## Figures\n");
    for f in figures.iter().filter(|f| super::charts::CHART_FILES.contains(&f.as_str())) {
        let _ = writeln!(md, "![{f}](figures/{f})\n");
    }
    if !table.is_empty() {
        let _ = writeln!(
            md,
            "The first seed's run of each row: samples decoded from N(0, I) by the global decoder; the evaluation set's latent means \
             (tab10 class colours: 0 blue, 1 orange, 2 green, 3 red, 4 purple, 5 brown, 6 pink, 7 grey, 8 olive, 9 cyan); \
             client 0's outliers (top row), through its own VAE (middle) and through the global VAE (bottom).\n"
        );
        let _ = writeln!(md, "| method | samples | latent space | outliers |");
        let _ = writeln!(md, "|---|---|---|---|");
        for r in table {
            let img = |kind: crate::FigureKind| {
                let f = kind.file_name(r.key);
                if figures.contains(&f) {
                    format!("![{f}](figures/{f})")
                } else {
                    "—".into()
                }
            };
            use crate::FigureKind::{Latent, Outliers, Samples};
            let _ = writeln!(md, "| {} | {} | {} | {} |", r.method, img(Samples), img(Latent), img(Outliers));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(config: ExperimentConfig, accuracy: f64, round_accuracy: Vec<f64>) -> CellResult {
        CellResult {
            config,
            accuracy,
            f1: accuracy,
            fid: None,
            lipschitz_decoder: 1.0,
            lipschitz_spectral_bound: 1.0,
            lipschitz_pairwise: 1.0,
            outliers_mapped_client: None,
            outliers_mapped_global: None,
            uplink_bytes_per_round: 0,
            epsilon_spent: None,
            guarantee_holds: None,
            wall_seconds: 0.0,
            backend: "cpu".into(),
            threads: 1,
            round_f1: round_accuracy.clone(),
            round_accuracy,
        }
    }

    /// Curve points average over the seeds that finished; the rounds curve reads round x of each
    /// seed's one run.
    #[test]
    fn curves_average_over_seeds_and_the_rounds_curve_reads_each_round() {
        let base = ExperimentConfig::default();
        let rounds = |seed| Curve::Rounds.point(&base, 1.0, seed).1;
        let samples = |seed| Curve::Samples.point(&base, 1000.0, seed).1;
        let cells = [
            cell(rounds(0), 0.7, (1..=20).map(|r| r as f64 / 100.0).collect()),
            cell(rounds(1), 0.8, (1..=20).map(|r| r as f64 / 50.0).collect()),
            cell(samples(0), 0.5, vec![]),
            cell(samples(2), 0.7, vec![]),
        ];
        let lookup = |cfg: &ExperimentConfig| cells.iter().find(|c| c.config == *cfg);
        let curves = build_curves(&[Curve::Rounds, Curve::Samples], 0..3, &base, &lookup);
        let (_, rounds) = &curves[0];
        assert_eq!(rounds.len(), 20);
        let third = rounds[2].accuracy.unwrap();
        assert_eq!((rounds[2].x, rounds[2].seeds, third.n), (3.0, 2, 2));
        assert!((third.mean - 0.045).abs() < 1e-12 && (rounds[19].accuracy.unwrap().mean - 0.3).abs() < 1e-12);
        assert!(rounds[2].fid.is_none() && rounds[2].lipschitz_decoder.is_none());
        let (_, samples) = &curves[1];
        assert_eq!(samples.len(), 1, "only x = 1000 has finished seeds");
        let s = samples[0].accuracy.unwrap();
        assert!((s.mean - 0.6).abs() < 1e-12 && (s.std.unwrap() - 0.1414213562373095).abs() < 1e-12);
    }

    #[test]
    fn an_fid_over_fewer_seeds_than_the_accuracy_says_so() {
        let fid = stat(&[70.0, 80.0]);
        assert_eq!(fid_text(fid, 2), "75.00 ± 7.07");
        assert_eq!(fid_text(fid, 3), "75.00 ± 7.07 (2 of 3 seeds)");
        assert_eq!(fid_text(None, 3), "—");
    }

    #[test]
    fn a_table_of_curves_alone_has_no_empty_row_sections() {
        let s = Settings { seeds: 3..6, ..Settings::new("unused".into()) };
        let md = markdown(&s, &ExperimentConfig::default(), &[], &[], &[], "");
        assert!(md.contains("seeds 3–5 per row") && md.contains("--first-seed 3 --seeds 3"), "{md}");
        assert!(!md.contains("| method |") && !md.contains("row by row"), "{md}");
    }

    #[test]
    fn rows_compare_with_the_papers_numbers_in_words() {
        let r = Row::Lcd;
        let acc = stat(&[0.60, 0.62, 0.64]);
        let f1 = stat(&[0.55]);
        let text = compare_with_paper(r, &[], r.paper(), acc, f1, None);
        assert!(text.starts_with("Accuracy 62.00 % vs the paper's 63.25 % (lower by 1.25 points)."), "{text}");
        assert!(text.contains("F1 55.00 % vs the paper's 60.01 % (lower by 5.01 points)."), "{text}");
        assert!(text.ends_with(r.note()), "{text}");
        let s = acc.unwrap();
        assert!((s.mean - 0.62).abs() < 1e-12 && (s.std.unwrap() - 0.02).abs() < 1e-12 && s.n == 3);
        assert!(stat(&[0.5]).unwrap().std.is_none() && stat(&[]).is_none());
        let changed = compare_with_paper(r, &["`rounds` = 1 (paper protocol: 5)".into()], r.paper(), acc, f1, None);
        assert!(changed.starts_with("Changed from the paper protocol: `rounds` = 1 (paper protocol: 5). Accuracy"));
    }
}
