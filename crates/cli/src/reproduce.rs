//! `align-fl reproduce`: the paper's comparison table and figures from one command.
//!
//! The table's rows (ALIGN-FL without privacy, DP-SGD under RDP and PLD, DP-SGD on the decoder
//! only, LCD-VAE, FedAvg, FedProx, a heterogeneous-architecture federation) run for every seed;
//! the curves (accuracy and FID against ε, λ_lip and synthetic samples per client) run at seed 0.
//! Every experiment is a *cell* with its own directory under `cells/`; a cell whose `cell.json`
//! holds the same configuration is reused, so an interrupted reproduction resumes where it
//! stopped. The partition and the FID statistics of the evaluation images are computed once per
//! seed and shared by its cells.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use metrics::{Chart, ChartPoint, Series};
use serde::{Deserialize, Serialize};
use tensor_kernels::Backend;

use crate::config::{AccountantName, DatasetName, ExperimentConfig, MechanismName, StrategyName};
use crate::run::{self, Prepared};

/// The quick preset (committed subset, scaled-down protocol).
const QUICK: &str = include_str!("../../../configs/quick.toml");
/// The architectures of the heterogeneous row.
const HETEROGENEOUS: &str = include_str!("../../../configs/heterogeneous.toml");

/// What `align-fl reproduce` was asked for.
pub struct Settings {
    /// Primary dataset (the other one supplies client 0's outliers).
    pub dataset: DatasetName,
    /// Seeds 0..seeds for the table rows.
    pub seeds: u64,
    /// Output directory.
    pub out: PathBuf,
    /// The committed subset and the quick preset instead of the paper protocol.
    pub quick: bool,
    /// A base protocol of one's own (TOML, as `align-fl run --config`) instead of the presets.
    pub config: Option<PathBuf>,
    /// Only these rows / curves (keys), or all.
    pub only: Option<Vec<String>>,
    /// Compute FID.
    pub fid: bool,
    /// Override the rounds of every cell.
    pub rounds: Option<usize>,
    /// Data directory (default: `data/subset` under --quick, else $ALIGN_FL_DATA, then ./data).
    pub data_dir: Option<PathBuf>,
    /// Inception weights file.
    pub inception_weights: Option<PathBuf>,
}

/// The paper's numbers for a row (DESIGN.md §2), in percent / FID units.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PaperNumbers {
    accuracy: Option<f64>,
    f1: Option<f64>,
    fid: Option<f64>,
}

/// One row of the table.
struct Row {
    key: &'static str,
    label: &'static str,
    paper: PaperNumbers,
    /// What differs from the authors' setup, in words.
    note: &'static str,
    setup: fn(&mut ExperimentConfig),
}

fn dp(cfg: &mut ExperimentConfig, accountant: AccountantName) {
    cfg.privacy.mechanism = MechanismName::DpSgd;
    cfg.privacy.accountant = accountant;
}

const ROWS: &[Row] = &[
    Row {
        key: "align-fl",
        label: "ALIGN-FL, no privacy",
        paper: PaperNumbers { accuracy: Some(74.25), f1: Some(74.06), fid: None },
        note: "Same protocol as the authors' code (DESIGN.md §2).",
        setup: |_| {},
    },
    Row {
        key: "dp-rdp",
        label: "ALIGN-FL + DP-SGD (ε = 10, RDP)",
        paper: PaperNumbers { accuracy: Some(51.75), f1: None, fid: None },
        note: "Ours clips adaptively with a privatised quantile (Andrew et al. 2021), samples Poisson batches and \
               uploads an N(0, I) prior, so the ε holds; the authors clip at the unprivatised median and upload a GMM \
               fitted on private latents, which no accountant covers.",
        setup: |c| dp(c, AccountantName::Rdp),
    },
    Row {
        key: "dp-pld",
        label: "ALIGN-FL + DP-SGD (ε = 10, PLD)",
        paper: PaperNumbers { accuracy: Some(51.75), f1: None, fid: None },
        note: "As the RDP row, with σ calibrated by the tighter PLD accountant (less noise for the same ε); the \
               paper has no PLD run.",
        setup: |c| dp(c, AccountantName::Pld),
    },
    Row {
        key: "dp-decoder",
        label: "ALIGN-FL + DP-SGD on the decoder only",
        paper: PaperNumbers { accuracy: None, f1: None, fid: None },
        note: "The authors' dec_dp ablation, which they report fails; DESIGN.md gives no number. No (ε, δ) \
               guarantee follows: the encoder trains without noise.",
        setup: |c| {
            dp(c, AccountantName::Rdp);
            c.privacy.scope = privacy::DpScope::DecoderOnly;
        },
    },
    Row {
        key: "lcd",
        label: "ALIGN-FL + LCD-VAE (λ_lip = 0.1)",
        paper: PaperNumbers { accuracy: Some(63.25), f1: Some(60.01), fid: None },
        note: "The penalty treats the interpolated latents as data, as DESIGN.md's formula reads; the authors' \
               code lets the penalty's gradient reach the encoder through a fresh reparameterised z.",
        setup: |c| {
            c.privacy.mechanism = MechanismName::Lipschitz;
            c.privacy.lambda_lip = 0.1;
        },
    },
    Row {
        key: "fedavg",
        label: "FedAvg",
        paper: PaperNumbers { accuracy: Some(43.75), f1: None, fid: Some(148.70) },
        note: "β = 1 as in the authors' runs.",
        setup: |c| c.strategy = StrategyName::Fedavg,
    },
    Row {
        key: "fedprox",
        label: "FedProx (μ = 0.01)",
        paper: PaperNumbers { accuracy: None, f1: None, fid: None },
        note: "No paper number in DESIGN.md.",
        setup: |c| c.strategy = StrategyName::Fedprox,
    },
    Row {
        key: "heterogeneous",
        label: "ALIGN-FL, heterogeneous architectures",
        paper: PaperNumbers { accuracy: None, f1: None, fid: None },
        note: "Not in the paper's table: five client architectures (latent sizes 2–8) and a sixth at the \
               server (configs/heterogeneous.toml); only decoders and priors cross the wire.",
        setup: |c| {
            let h: ExperimentConfig = toml::from_str(HETEROGENEOUS).expect("configs/heterogeneous.toml parses");
            c.client_models = h.client_models;
            c.server.model = h.server.model;
        },
    },
];

/// The FID range the paper reports over its ALIGN-FL variants (DESIGN.md gives no per-variant FID).
const PAPER_ALIGN_FID: (f64, f64) = (81.91, 98.46);

/// The curves: key, x values, and how a point's config is made from the base.
const EPSILONS: [f64; 5] = [1.0, 2.0, 5.0, 10.0, 20.0];
const LAMBDAS: [f64; 4] = [0.0, 0.01, 0.1, 1.0];
const SAMPLES: [usize; 4] = [1000, 2000, 5000, 10000];
const CURVES: [&str; 3] = ["epsilon", "lambda", "samples"];

/// One experiment to run (or reuse).
struct Cell {
    /// Directory name under `cells/`.
    key: String,
    seed: u64,
    cfg: ExperimentConfig,
}

/// What the table needs from one finished cell (`cells/<key>/seed-<s>/cell.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CellResult {
    config: ExperimentConfig,
    accuracy: f64,
    f1: f64,
    fid: Option<f64>,
    lipschitz_decoder: f64,
    lipschitz_spectral_bound: f64,
    lipschitz_pairwise: f64,
    outliers_mapped_client: Option<f64>,
    outliers_mapped_global: Option<f64>,
    uplink_bytes_per_round: usize,
    /// Largest ε any client spent (DP-SGD rows).
    epsilon_spent: Option<f64>,
    /// Whether every client's guarantee holds (DP-SGD rows).
    guarantee_holds: Option<bool>,
    figures: Vec<String>,
    wall_seconds: f64,
    backend: String,
    threads: usize,
}

/// The protocol every cell starts from, and the data directory its config names (if any).
fn base_config(s: &Settings) -> Result<(ExperimentConfig, Option<PathBuf>)> {
    let mut cfg = match (&s.config, s.quick) {
        (Some(path), _) => ExperimentConfig::load(path)?,
        (None, true) => toml::from_str(QUICK).context("the embedded configs/quick.toml")?,
        (None, false) => ExperimentConfig::default(),
    };
    // Only a config file's own data_dir counts (the embedded preset's is relative to configs/).
    let data_dir = cfg.data_dir.take().filter(|_| s.config.is_some());
    cfg.dataset = s.dataset;
    cfg.compare = Vec::new();
    if let Some(r) = s.rounds {
        cfg.rounds = r;
    }
    cfg.fid.enabled &= s.fid;
    cfg.fid.weights = None;
    Ok((cfg, data_dir))
}

fn row(key: &str) -> &'static Row {
    ROWS.iter().find(|r| r.key == key).expect("a known row")
}

fn row_config(base: &ExperimentConfig, key: &str, seed: u64) -> ExperimentConfig {
    let mut cfg = base.clone();
    cfg.seed = seed;
    (row(key).setup)(&mut cfg);
    cfg
}

fn curve_config(base: &ExperimentConfig, curve: &str, i: usize) -> (String, ExperimentConfig) {
    match curve {
        "epsilon" => {
            let mut cfg = row_config(base, "dp-rdp", 0);
            cfg.privacy.epsilon = EPSILONS[i];
            (format!("epsilon-{}", EPSILONS[i]), cfg)
        }
        "lambda" if LAMBDAS[i] == 0.0 => ("lambda-0".into(), row_config(base, "align-fl", 0)),
        "lambda" => {
            let mut cfg = row_config(base, "lcd", 0);
            cfg.privacy.lambda_lip = LAMBDAS[i] as f32;
            (format!("lambda-{}", LAMBDAS[i]), cfg)
        }
        _ => {
            let mut cfg = row_config(base, "align-fl", 0);
            cfg.server.synthetic_samples = SAMPLES[i];
            (format!("samples-{}", SAMPLES[i]), cfg)
        }
    }
}

fn curve_len(curve: &str) -> usize {
    match curve {
        "epsilon" => EPSILONS.len(),
        "lambda" => LAMBDAS.len(),
        _ => SAMPLES.len(),
    }
}

/// Every cell the settings ask for; a configuration met twice runs once (under its first key).
fn plan(s: &Settings, base: &ExperimentConfig) -> Result<(Vec<Cell>, Vec<&'static Row>, Vec<&'static str>)> {
    let known: Vec<&str> = ROWS.iter().map(|r| r.key).chain(CURVES).collect();
    if let Some(only) = &s.only {
        if let Some(bad) = only.iter().find(|k| !known.contains(&k.as_str())) {
            bail!("--only: unknown experiment {bad:?}; choose from {}", known.join(", "));
        }
    }
    let wanted = |key: &str| s.only.as_ref().is_none_or(|o| o.iter().any(|k| k == key));
    let rows: Vec<&Row> = ROWS.iter().filter(|r| wanted(r.key)).collect();
    let curves: Vec<&str> = CURVES.into_iter().filter(|c| wanted(c)).collect();
    let mut cells: Vec<Cell> = Vec::new();
    let mut push = |key: String, cfg: ExperimentConfig| {
        if !cells.iter().any(|c| c.cfg == cfg) {
            cells.push(Cell { key, seed: cfg.seed, cfg });
        }
    };
    for seed in 0..s.seeds {
        for r in &rows {
            push(r.key.to_string(), row_config(base, r.key, seed));
        }
    }
    for &curve in &curves {
        for i in 0..curve_len(curve) {
            let (key, cfg) = curve_config(base, curve, i);
            push(key, cfg);
        }
    }
    for c in &cells {
        c.cfg.validate().with_context(|| format!("experiment {} (seed {})", c.key, c.seed))?;
    }
    Ok((cells, rows, curves))
}

fn cell_dir(out: &Path, key: &str, seed: u64) -> PathBuf {
    out.join("cells").join(key).join(format!("seed-{seed}"))
}

/// The finished result of a cell with exactly this configuration, if one is on disk.
fn cached(dir: &Path, cfg: &ExperimentConfig) -> Option<CellResult> {
    let text = std::fs::read_to_string(dir.join("cell.json")).ok()?;
    let result: CellResult = serde_json::from_str(&text).ok()?;
    (result.config == *cfg).then_some(result)
}

fn summarise(cfg: &ExperimentConfig, report: &crate::report::Report) -> CellResult {
    let f = &report.final_metrics;
    let dp = report.privacy.as_ref().filter(|p| p.target_epsilon.is_some());
    CellResult {
        config: cfg.clone(),
        accuracy: f.accuracy,
        f1: f.f1,
        fid: f.fid,
        lipschitz_decoder: f.lipschitz_decoder,
        lipschitz_spectral_bound: f.lipschitz_spectral_bound,
        lipschitz_pairwise: f.lipschitz_pairwise,
        outliers_mapped_client: report.outliers.as_ref().map(|o| o.client.fraction_mapped_to_typical),
        outliers_mapped_global: report.outliers.as_ref().map(|o| o.global.fraction_mapped_to_typical),
        uplink_bytes_per_round: report.rounds.last().map_or(0, |r| r.uplink_bytes),
        epsilon_spent: dp.map(|p| p.clients.iter().map(|c| c.epsilon).fold(0.0, f64::max)),
        guarantee_holds: dp.map(|p| p.guarantee_holds),
        figures: main_figures(cfg),
        wall_seconds: report.wall_seconds,
        backend: report.backend.clone(),
        threads: report.threads,
    }
}

/// The figure files a run writes for its main strategy.
fn main_figures(cfg: &ExperimentConfig) -> Vec<String> {
    let name = cfg.strategy.as_str();
    let mut figures = vec![format!("samples-{name}.png"), format!("latent-{name}.png")];
    if cfg.partition.outliers > 0 {
        figures.push(format!("outliers-{name}.png"));
    }
    figures
}

/// Runs (or reuses) every cell, then writes the table, the curves and the figures.
pub fn reproduce<B: Backend>(backend: &B, s: &Settings) -> Result<()> {
    if s.seeds == 0 {
        bail!("--seeds 0: run at least one seed");
    }
    let start = Instant::now();
    let (base, config_data_dir) = base_config(s)?;
    let data_dir = match (&s.data_dir, config_data_dir, s.quick) {
        (Some(d), _, _) => d.clone(),
        (None, Some(d), _) => d,
        (None, None, true) => PathBuf::from("data/subset"),
        (None, None, false) => data::resolve_data_dir(None),
    };
    let (cells, rows, curves) = plan(s, &base)?;
    std::fs::create_dir_all(&s.out).with_context(|| format!("creating {}", s.out.display()))?;
    let mut results: BTreeMap<(String, u64), CellResult> = BTreeMap::new();
    let pending: Vec<&Cell> = cells
        .iter()
        .filter(|c| match cached(&cell_dir(&s.out, &c.key, c.seed), &c.cfg) {
            Some(r) => {
                results.insert((c.key.clone(), c.seed), r);
                false
            }
            None => true,
        })
        .collect();
    eprintln!(
        "reproduce: {} experiments, {} already done in {}, {} to run on {} images from {}",
        cells.len(),
        cells.len() - pending.len(),
        s.out.display(),
        pending.len(),
        base.dataset.kind().display_name(),
        data_dir.display()
    );
    let mut seeds: Vec<u64> = pending.iter().map(|c| c.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let mut done = cells.len() - pending.len();
    let mut failures = Vec::new();
    for seed in seeds {
        // One partition and one set of evaluation-image FID statistics per seed.
        let mut seed_cfg = base.clone();
        seed_cfg.seed = seed;
        seed_cfg.fid.weights.clone_from(&s.inception_weights);
        let partition = run::load_partition(&seed_cfg, &data_dir)?;
        let fid = run::fid_scorer(backend, &seed_cfg, &partition)?;
        for cell in pending.iter().filter(|c| c.seed == seed) {
            done += 1;
            eprintln!("\n[{done}/{}] {} seed {seed}", cells.len(), cell.key);
            let dir = cell_dir(&s.out, &cell.key, seed);
            let prepared = Prepared { data_dir: &data_dir, partition: &partition, fid: &fid };
            let report = match run::run_on_partition(backend, &cell.cfg, &prepared, &dir) {
                Ok(report) => report,
                Err(e) => {
                    // Keep going: one diverged or broken experiment should not cost the others.
                    let why = format!("{} seed {seed}: {e:#} (its files are in {})", cell.key, dir.display());
                    eprintln!("experiment failed: {why}");
                    failures.push(why);
                    continue;
                }
            };
            let result = summarise(&cell.cfg, &report);
            std::fs::write(dir.join("cell.json"), serde_json::to_string_pretty(&result)?)
                .with_context(|| format!("writing {}", dir.join("cell.json").display()))?;
            results.insert((cell.key.clone(), seed), result);
        }
    }
    let lookup = |cfg: &ExperimentConfig| {
        let cell = cells.iter().find(|c| c.cfg == *cfg).expect("planned");
        results.get(&(cell.key.clone(), cell.seed))
    };
    let table = build_table(&rows, s.seeds, &base, paper_comparable(s), &lookup);
    let curves = build_curves(&curves, &base, &lookup);
    let finished = Finished { cells: &cells, lookup: &lookup };
    write_outputs(s, &base, &table, &curves, &finished, &failures, start.elapsed().as_secs_f64())?;
    println!("table: {}", s.out.join("table.md").display());
    if !failures.is_empty() {
        bail!(
            "{} experiment(s) failed; the table shows the others. Run the same command again to retry them:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

/// Mean and sample standard deviation (None for one value).
#[derive(Clone, Copy, Debug, Serialize)]
struct Stat {
    mean: f64,
    std: Option<f64>,
    n: usize,
}

fn stat(values: &[f64]) -> Option<Stat> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = (n > 1).then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
    Some(Stat { mean, std, n })
}

#[derive(Debug, Serialize)]
struct TableRow {
    key: &'static str,
    method: &'static str,
    seeds: usize,
    fid: Option<Stat>,
    accuracy: Option<Stat>,
    f1: Option<Stat>,
    lipschitz_decoder: Option<Stat>,
    outliers_mapped_client: Option<Stat>,
    outliers_mapped_global: Option<Stat>,
    uplink_bytes_per_round: usize,
    epsilon_spent: Option<f64>,
    guarantee_holds: Option<bool>,
    wall_seconds: f64,
    paper: PaperNumbers,
    comparison: String,
}

/// Whether the paper's numbers apply: DESIGN.md has them for MNIST on the full protocol only.
fn paper_comparable(s: &Settings) -> bool {
    !s.quick && s.config.is_none() && s.dataset == DatasetName::Mnist
}

/// The `align-fl reproduce` command line that makes this table.
fn command_line(s: &Settings) -> String {
    let mut c = String::from("align-fl reproduce");
    if s.quick {
        c += " --quick";
    }
    if let Some(path) = &s.config {
        c += &format!(" --config {}", path.display());
    }
    if s.dataset == DatasetName::FashionMnist {
        c += " --dataset fashion-mnist";
    }
    c += &format!(" --seeds {}", s.seeds);
    if let Some(r) = s.rounds {
        c += &format!(" --rounds {r}");
    }
    if let Some(only) = &s.only {
        c += &format!(" --only {}", only.join(","));
    }
    if !s.fid {
        c += " --no-fid";
    }
    c + &format!(" --out {}", s.out.display())
}

fn build_table<'a>(
    rows: &[&'static Row],
    seeds: u64,
    base: &ExperimentConfig,
    comparable: bool,
    lookup: &dyn Fn(&ExperimentConfig) -> Option<&'a CellResult>,
) -> Vec<TableRow> {
    rows.iter()
        .map(|r| {
            let paper = if comparable { r.paper } else { PaperNumbers::default() };
            let runs: Vec<&CellResult> = (0..seeds).filter_map(|s| lookup(&row_config(base, r.key, s))).collect();
            let collect =
                |f: &dyn Fn(&CellResult) -> Option<f64>| stat(&runs.iter().filter_map(|c| f(c)).collect::<Vec<_>>());
            let accuracy = collect(&|c| Some(c.accuracy));
            let f1 = collect(&|c| Some(c.f1));
            let fid = collect(&|c| c.fid);
            let eps: Vec<f64> = runs.iter().filter_map(|c| c.epsilon_spent).collect();
            let holds: Vec<bool> = runs.iter().filter_map(|c| c.guarantee_holds).collect();
            TableRow {
                key: r.key,
                method: r.label,
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
                    compare_with_paper(r, paper, accuracy, f1, fid)
                },
            }
        })
        .collect()
}

/// One sentence per measured difference from the paper's number, then the row's note.
fn compare_with_paper(
    r: &Row,
    paper: PaperNumbers,
    accuracy: Option<Stat>,
    f1: Option<Stat>,
    fid: Option<Stat>,
) -> String {
    let mut parts = Vec::new();
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
    parts.push(r.note.to_string());
    parts.join(" ")
}

#[derive(Debug, Serialize)]
struct CurvePoint {
    x: f64,
    accuracy: f64,
    f1: f64,
    fid: Option<f64>,
    epsilon_spent: Option<f64>,
    lipschitz_decoder: f64,
}

fn build_curves<'a>(
    curves: &[&'static str],
    base: &ExperimentConfig,
    lookup: &dyn Fn(&ExperimentConfig) -> Option<&'a CellResult>,
) -> BTreeMap<&'static str, Vec<CurvePoint>> {
    curves
        .iter()
        .map(|&curve| {
            let points = (0..curve_len(curve))
                .filter_map(|i| {
                    let c = lookup(&curve_config(base, curve, i).1)?;
                    let x = match curve {
                        "epsilon" => EPSILONS[i],
                        "lambda" => LAMBDAS[i],
                        _ => SAMPLES[i] as f64,
                    };
                    Some(CurvePoint {
                        x,
                        accuracy: c.accuracy,
                        f1: c.f1,
                        fid: c.fid,
                        epsilon_spent: c.epsilon_spent,
                        lipschitz_decoder: c.lipschitz_decoder,
                    })
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

fn paper_cell(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.2}"))
}

/// The planned cells and the results of those that finished.
struct Finished<'a> {
    cells: &'a [Cell],
    lookup: &'a dyn Fn(&ExperimentConfig) -> Option<&'a CellResult>,
}

/// "Paper protocol", "Quick protocol (committed subset)" or the config file's.
fn protocol_label(s: &Settings) -> String {
    match (&s.config, s.quick) {
        (Some(path), _) => format!("Protocol of `{}`", path.display()),
        (None, true) => "Quick protocol (committed subset)".into(),
        (None, false) => "Paper protocol".into(),
    }
}

fn write_outputs(
    s: &Settings,
    base: &ExperimentConfig,
    table: &[TableRow],
    curves: &BTreeMap<&'static str, Vec<CurvePoint>>,
    finished: &Finished<'_>,
    failures: &[String],
    wall: f64,
) -> Result<()> {
    let figures = s.out.join("figures");
    std::fs::create_dir_all(&figures).with_context(|| format!("creating {}", figures.display()))?;
    let mut figure_files = Vec::new();
    // Latent spaces, sample grids and outlier reconstructions of each row's seed-0 run.
    for row in table {
        let cell = finished.cells.iter().find(|c| c.cfg == row_config(base, row.key, 0)).expect("planned");
        if (finished.lookup)(&cell.cfg).is_none() {
            continue; // That run failed: no figures to show.
        }
        let dir = cell_dir(&s.out, &cell.key, 0);
        for name in main_figures(&cell.cfg) {
            let kind = name.split('-').next().unwrap_or("figure");
            let to = format!("{kind}-{}.png", row.key);
            std::fs::copy(dir.join(&name), figures.join(&to))
                .with_context(|| format!("copying {} into {}", dir.join(&name).display(), figures.display()))?;
            figure_files.push(to);
        }
    }
    figure_files.extend(write_charts(&figures, table, curves)?);
    let json = serde_json::json!({
        "dataset": base.dataset.kind().display_name(),
        "protocol": protocol_label(s),
        "seeds": s.seeds,
        "rows": table,
        "curves": curves,
        "paper_align_fl_fid_range": PAPER_ALIGN_FID,
        "figures": figure_files,
        "failed": failures,
        "wall_seconds": wall,
    });
    std::fs::write(s.out.join("table.json"), serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", s.out.join("table.json").display()))?;
    let mut md = table_markdown(s, base, table, curves, &figure_files, finished);
    if !failures.is_empty() {
        let _ = writeln!(md, "\n## Failed experiments\n");
        for f in failures {
            let _ = writeln!(md, "* {f}");
        }
    }
    std::fs::write(s.out.join("table.md"), md).with_context(|| format!("writing {}", s.out.join("table.md").display()))
}

fn table_markdown(
    s: &Settings,
    base: &ExperimentConfig,
    table: &[TableRow],
    curves: &BTreeMap<&'static str, Vec<CurvePoint>>,
    figures: &[String],
    finished: &Finished<'_>,
) -> String {
    let mut md = String::new();
    let machine = finished
        .cells
        .iter()
        .find_map(|c| (finished.lookup)(&c.cfg))
        .map_or(String::new(), |c| format!(", backend {}, {} threads", c.backend, c.threads));
    let _ = writeln!(md, "# ALIGN-FL reproduction: {}\n", base.dataset.kind().display_name());
    let protocol = protocol_label(s);
    let _ = writeln!(
        md,
        "{protocol}: {} clients, {} round(s), {} synthetic samples per client, {} seed(s) per row (curves: seed 0){machine}. \
         Made by `{}`.\n",
        base.partition.clients,
        base.rounds,
        base.server.synthetic_samples,
        s.seeds,
        command_line(s)
    );
    let _ = writeln!(
        md,
        "| method | FID | accuracy % | F1 % | decoder Lipschitz | outliers mapped to typical, client 0 / global % | uplink MB / round | ε spent | guarantee | paper accuracy % | paper F1 % | paper FID | wall s / run |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|");
    for r in table {
        let paper_fid = match (r.paper.fid, r.key) {
            (Some(f), _) => format!("{f:.2}"),
            (None, "align-fl" | "dp-rdp" | "dp-pld" | "lcd") if paper_comparable(s) => {
                format!("{:.2}–{:.2}†", PAPER_ALIGN_FID.0, PAPER_ALIGN_FID.1)
            }
            _ => "—".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} / {} | {:.2} | {} | {} | {} | {} | {paper_fid} | {:.0} |",
            r.method,
            cell_text(r.fid, 1.0, 2),
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
        if paper_comparable(s) {
            "† DESIGN.md gives the paper's FID only as the range over its ALIGN-FL variants."
        } else if s.quick || s.config.is_some() {
            "The paper's columns are empty: its numbers are for the full protocol, which this run changes."
        } else {
            "The paper's columns are empty: DESIGN.md gives the paper's numbers for MNIST only."
        }
    );
    let _ = writeln!(
        md,
        "## {}\n",
        if paper_comparable(s) { "Against the paper, row by row" } else { "Notes, row by row" }
    );
    for r in table {
        let _ = writeln!(md, "* **{}**: {}", r.method, r.comparison);
    }
    for (curve, points) in curves {
        let (title, x) = match *curve {
            "epsilon" => ("Accuracy and FID against ε (DP-SGD, RDP, seed 0)", "ε"),
            "lambda" => ("Accuracy and FID against λ_lip (LCD-VAE, seed 0; λ = 0 is no penalty)", "λ_lip"),
            _ => ("Accuracy and FID against synthetic samples per client (ALIGN-FL, seed 0)", "samples"),
        };
        let _ = writeln!(md, "\n## {title}\n");
        let _ = writeln!(md, "| {x} | accuracy % | F1 % | FID | decoder Lipschitz | ε spent |");
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
        for p in points {
            let _ = writeln!(
                md,
                "| {} | {:.2} | {:.2} | {} | {:.2} | {} |",
                p.x,
                100.0 * p.accuracy,
                100.0 * p.f1,
                p.fid.map_or("—".into(), |f| format!("{f:.2}")),
                p.lipschitz_decoder,
                p.epsilon_spent.map_or("—".into(), |e| format!("{e:.3}"))
            );
        }
    }
    let _ = writeln!(md, "\n## Figures\n");
    for f in figures.iter().filter(|f| ["privacy-utility.png", "samples.png"].contains(&f.as_str())) {
        let _ = writeln!(md, "![{f}](figures/{f})\n");
    }
    let _ = writeln!(
        md,
        "Seed 0 of each row: samples decoded from N(0, I) by the global decoder; the evaluation set's latent means \
         (tab10 class colours: 0 blue, 1 orange, 2 green, 3 red, 4 purple, 5 brown, 6 pink, 7 grey, 8 olive, 9 cyan); \
         client 0's outliers (top row), through its own VAE (middle) and through the global VAE (bottom).\n"
    );
    let _ = writeln!(md, "| method | samples | latent space | outliers |");
    let _ = writeln!(md, "|---|---|---|---|");
    for r in table {
        let img = |kind: &str| {
            let f = format!("{kind}-{}.png", r.key);
            if figures.contains(&f) {
                format!("![{f}](figures/{f})")
            } else {
                "—".into()
            }
        };
        let _ = writeln!(md, "| {} | {} | {} | {} |", r.method, img("samples"), img("latent"), img("outliers"));
    }
    md
}

/// privacy-utility.png (accuracy and FID against ε and λ_lip) and samples.png; panels without
/// data (FID skipped) are left out.
fn write_charts(
    dir: &Path,
    table: &[TableRow],
    curves: &BTreeMap<&'static str, Vec<CurvePoint>>,
) -> Result<Vec<String>> {
    type Metric = fn(&CurvePoint) -> Option<f64>;
    let metrics: [(&str, &str, Metric); 2] =
        [("accuracy", "accuracy %", |p| Some(100.0 * p.accuracy)), ("FID", "FID", |p| p.fid)];
    let line = |label: &str, points: &[&CurvePoint], y: Metric| Series {
        label: label.into(),
        points: points.iter().filter_map(|p| y(p).map(|v| ChartPoint { x: p.x, y: v, spread: 0.0 })).collect(),
    };
    // A reference drawn flat across the curve's x values.
    let flat = |label: &str, xs: &[f64], y: Option<f64>| {
        y.map(|y| Series {
            label: label.into(),
            points: xs.iter().map(|&x| ChartPoint { x, y, spread: 0.0 }).collect(),
        })
    };
    let panel = |title: String, x: &str, y: &str, main: Series, reference: Option<Series>| {
        (!main.points.is_empty()).then(|| Chart {
            title,
            x_label: x.into(),
            y_label: y.into(),
            log_x: true,
            series: std::iter::once(main).chain(reference).collect(),
        })
    };
    let no_privacy = table.iter().find(|r| r.key == "align-fl");
    let mut privacy_panels = Vec::new();
    if let Some(points) = curves.get("epsilon") {
        let refs: Vec<&CurvePoint> = points.iter().collect();
        let xs: Vec<f64> = points.iter().map(|p| p.x).collect();
        for (name, axis, y) in metrics {
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
    if let Some(points) = curves.get("lambda") {
        let (zero, penalised): (Vec<&CurvePoint>, Vec<&CurvePoint>) = points.iter().partition(|p| p.x == 0.0);
        let xs: Vec<f64> = penalised.iter().map(|p| p.x).collect();
        for (name, axis, y) in metrics {
            privacy_panels.extend(panel(
                format!("{name} vs λ_lip"),
                "λ_lip",
                axis,
                line("LCD-VAE", &penalised, y),
                flat("λ_lip = 0", &xs, zero.first().and_then(|p| y(p))),
            ));
        }
    }
    let mut written = Vec::new();
    if !privacy_panels.is_empty() {
        metrics::line_charts(&dir.join("privacy-utility.png"), &privacy_panels, 2)?;
        written.push("privacy-utility.png".to_string());
    }
    if let Some(points) = curves.get("samples") {
        let refs: Vec<&CurvePoint> = points.iter().collect();
        let panels: Vec<Chart> = metrics
            .iter()
            .filter_map(|&(name, axis, y)| {
                panel(
                    format!("{name} vs samples per client"),
                    "synthetic samples per client",
                    axis,
                    line("ALIGN-FL", &refs, y),
                    None,
                )
            })
            .collect();
        metrics::line_charts(&dir.join("samples.png"), &panels, 2)?;
        written.push("samples.png".to_string());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_compare_with_the_papers_numbers_in_words() {
        let r = row("lcd");
        let acc = stat(&[0.60, 0.62, 0.64]);
        let f1 = stat(&[0.55]);
        let text = compare_with_paper(r, r.paper, acc, f1, None);
        assert!(text.starts_with("Accuracy 62.00 % vs the paper's 63.25 % (lower by 1.25 points)."), "{text}");
        assert!(text.contains("F1 55.00 % vs the paper's 60.01 % (lower by 5.01 points)."), "{text}");
        assert!(text.ends_with(r.note), "{text}");
        let s = acc.unwrap();
        assert!((s.mean - 0.62).abs() < 1e-12 && (s.std.unwrap() - 0.02).abs() < 1e-12 && s.n == 3);
        assert!(stat(&[0.5]).unwrap().std.is_none() && stat(&[]).is_none());
    }

    #[test]
    fn the_plan_runs_each_configuration_once_and_validates_it() {
        let settings = Settings {
            dataset: DatasetName::Mnist,
            seeds: 2,
            out: PathBuf::from("unused"),
            quick: false,
            config: None,
            only: None,
            fid: false,
            rounds: None,
            data_dir: None,
            inception_weights: None,
        };
        let (base, _) = base_config(&settings).unwrap();
        let (cells, rows, curves) = plan(&settings, &base).unwrap();
        assert_eq!((rows.len(), curves.len()), (ROWS.len(), 3));
        // 8 rows × 2 seeds, ε ∈ {1, 2, 5, 20} (10 is dp-rdp), λ ∈ {0.01, 1} (0: align-fl, 0.1: lcd),
        // samples ∈ {1000, 2000, 10000} (5000 is align-fl).
        assert_eq!(cells.len(), 16 + 4 + 2 + 3);
        let dp = cells.iter().find(|c| c.key == "dp-decoder").unwrap();
        assert_eq!(dp.cfg.privacy.scope, privacy::DpScope::DecoderOnly);
        assert_eq!(dp.cfg.privacy.mechanism, MechanismName::DpSgd);
        let het = cells.iter().find(|c| c.key == "heterogeneous").unwrap();
        assert_eq!(het.cfg.client_models.len(), 5);
        let only = Settings { only: Some(vec!["nope".into()]), ..settings };
        assert!(plan(&only, &base).err().unwrap().to_string().contains("unknown experiment \"nope\""));
    }
}
