//! `report.json` and `report.md` of a run, both from one [`Report`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use federation::PriorKind;
use serde::{Deserialize, Serialize};
use vae::{GradientScope, PenaltyTarget};

use crate::config::{ExperimentConfig, StrategyKind};
use crate::out_dir::write_file;
use crate::Result;

/// Metrics after one round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoundRecord {
    /// 1-based round.
    pub round: usize,
    /// Linear-probe accuracy on the evaluation set.
    pub accuracy: f64,
    /// Linear-probe weighted F1.
    pub f1: f64,
    /// max ‖∂Σ decoder(z)/∂z‖ over the evaluation latents.
    pub lipschitz_decoder: f64,
    /// Π‖Wₗ‖₂ over the global decoder's weights (an upper bound before the sigmoid).
    pub lipschitz_spectral_bound: f64,
    /// Largest ‖f(z) − f(z′)‖/‖z − z′‖ over evaluation latents z and z′ at distance 0.05.
    pub lipschitz_pairwise: f64,
    /// Bytes uploaded by all clients this round.
    pub uplink_bytes: usize,
    /// Wall time of the round including evaluation.
    pub seconds: f64,
    /// Each client's last-epoch loss (null under DP-SGD: clients do not release it).
    pub client_loss: Vec<Option<f64>>,
    /// The server's last-epoch loss (ALIGN-FL).
    pub server_loss: Option<f64>,
    /// Synthetic images the server trained on (ALIGN-FL).
    pub synthetic_samples: usize,
    /// FID of the global decoder's samples, on the rounds `fid.every` asks for and the last.
    pub fid: Option<f64>,
    /// Clients whose update the server left out of this round, and why (a deployment's server
    /// leaves out a client that does not answer in time or whose update fails validation).
    #[serde(default)]
    pub left_out: Vec<LeftOut>,
}

/// A client left out of a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeftOut {
    /// The client's id.
    pub client: usize,
    /// Why: no answer within the timeout, or its update failed validation (the error).
    pub reason: String,
}

/// Metrics of the final global model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinalMetrics {
    /// Linear-probe accuracy.
    pub accuracy: f64,
    /// Linear-probe weighted F1.
    pub f1: f64,
    /// Decoder Lipschitz estimate.
    pub lipschitz_decoder: f64,
    /// Spectral-norm product bound.
    pub lipschitz_spectral_bound: f64,
    /// Pairwise ratio estimate.
    pub lipschitz_pairwise: f64,
    /// FID of the final global decoder's samples against the evaluation images (null when not
    /// computed; the report's `fid_note` says why).
    pub fid: Option<f64>,
}

/// One strategy's run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StrategyRun {
    /// Strategy.
    pub strategy: StrategyKind,
    /// Per-round metrics.
    pub rounds: Vec<RoundRecord>,
    /// Final metrics.
    #[serde(rename = "final")]
    pub final_metrics: FinalMetrics,
    /// Wall time of the whole strategy run.
    pub wall_seconds: f64,
    /// Checkpoint of the final global model.
    pub checkpoint: String,
    /// Figures written.
    pub figures: Vec<String>,
    /// Each DP-SGD client's privacy after the last round (empty without DP).
    pub client_privacy: Vec<privacy::PrivacySpent>,
    /// Outlier analysis after the last round (None without outliers).
    pub outliers: Option<OutlierReport>,
    /// What looks wrong with the result (a collapsed model).
    pub warnings: Vec<String>,
}

/// How client 0's cross-domain outliers come out of its final VAE and of the global VAE.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutlierReport {
    /// Through client 0's own VAE (encoder μ, then decoder).
    pub client: metrics::OutlierStats,
    /// Through the global VAE.
    pub global: metrics::OutlierStats,
}

/// The report's `privacy` object: what each mechanism claims, and on what grounds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "mechanism", rename_all = "kebab-case")]
pub enum PrivacyReport {
    /// DP-SGD with an accountant.
    DpSgd {
        /// Target ε per client.
        target_epsilon: f64,
        /// δ.
        delta: f64,
        /// The layers DP-SGD clipped and noised.
        dp_scope: GradientScope,
        /// The latent prior uploaded with each decoder (a GMM is fitted on private latents).
        prior: PriorKind,
        /// Whether every client's guarantee holds for everything released.
        guarantee_holds: bool,
        /// Per client: the (ε, δ) of everything the run released that saw its data (the main
        /// strategy's model and every baseline's), composed.
        release: Vec<privacy::ComposedPrivacy>,
        /// Per client, the main strategy's training: ε spent, δ, σ, q, steps, accountant,
        /// clipping, noise, sampling, reasons.
        clients: Vec<privacy::PrivacySpent>,
        /// Whether the run analysed client 0's raw training images (the outlier analysis and its
        /// figure, under DP-SGD only when `privacy.show_training_images` asks for it).
        training_images_shown: bool,
    },
    /// LCD-VAE: empirical privacy, no (ε, δ) claimed.
    Lipschitz {
        /// λ_lip.
        lambda_lip: f32,
        /// The network the penalty constrains.
        lipschitz_at: PenaltyTarget,
        /// The latent prior uploaded with each decoder.
        prior: PriorKind,
    },
}

/// The whole report.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// The effective configuration.
    pub config: ExperimentConfig,
    /// Numeric backend.
    pub backend: String,
    /// Worker threads.
    pub threads: usize,
    /// Data directory used.
    pub data_dir: String,
    /// The main strategy's run (its fields stand at the top level of `report.json`).
    #[serde(flatten)]
    pub main: StrategyRun,
    /// Privacy accounting of the main strategy; null when no mechanism was applied.
    pub privacy: Option<PrivacyReport>,
    /// Baselines on the same partition.
    pub baselines: BTreeMap<StrategyKind, StrategyRun>,
    /// Wall time of everything.
    pub total_wall_seconds: f64,
    /// Why FID is missing (disabled, or the Inception weights were not found); null when computed.
    pub fid_note: Option<String>,
}

/// A privacy crate enum's name as configs and reports spell it (its serde name).
fn spelled<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn fid_cell(fid: Option<f64>) -> String {
    fid.map_or("—".to_string(), |f| format!("{f:.2}"))
}

fn run_table(out: &mut String, run: &StrategyRun) {
    let _ = writeln!(out, "| round | accuracy | F1 | decoder Lipschitz | FID | uplink bytes | seconds |");
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|");
    for r in &run.rounds {
        let _ = writeln!(
            out,
            "| {} | {:.4} | {:.4} | {:.3} | {} | {} | {:.1} |",
            r.round,
            r.accuracy,
            r.f1,
            r.lipschitz_decoder,
            fid_cell(r.fid),
            r.uplink_bytes,
            r.seconds
        );
    }
}

fn privacy_section(md: &mut String, privacy: Option<&PrivacyReport>) {
    match privacy {
        None => {
            let _ = writeln!(
                md,
                "**Privacy:** none. No DP-SGD and no Lipschitz penalty were applied, so no (ε, δ) guarantee is claimed.\n"
            );
        }
        Some(PrivacyReport::Lipschitz { lambda_lip, lipschitz_at, .. }) => {
            let _ = writeln!(
                md,
                "**Privacy:** LCD-VAE, a Lipschitz gradient penalty on the client {}s (λ_lip = {lambda_lip}). This is empirical \
                 privacy only: no (ε, δ) guarantee is claimed.\n",
                spelled(lipschitz_at)
            );
        }
        Some(dp_sgd) => dp_sgd_section(md, dp_sgd),
    }
}

/// The DP-SGD report: the verdict for everything released, the main training per client, the
/// composed release per client, and what is not covered.
fn dp_sgd_section(md: &mut String, report: &PrivacyReport) {
    let PrivacyReport::DpSgd {
        target_epsilon: epsilon,
        delta,
        dp_scope,
        prior,
        guarantee_holds,
        release,
        clients,
        training_images_shown,
    } = report
    else {
        return;
    };
    let total = release.iter().map(|r| r.epsilon).fold(0.0, f64::max);
    let trainings = release.first().map_or(1, |r| r.trainings);
    let verdict = if *guarantee_holds {
        format!(
            "every client's guarantee holds: ({total:.4}, {delta:e})-DP for everything this run writes that saw its \
             data ({trainings} model(s), each trained to ε = {epsilon}), with its sample count N public (as in \
             DP-SGD's published sampling rate q = batch / N)"
        )
    } else {
        "the (ε, δ) guarantee does NOT hold for this run (reasons below)".to_string()
    };
    let _ = writeln!(
        md,
        "**Privacy:** DP-SGD on {}, target ε = {epsilon} at δ = {delta:e}, prior {}: {verdict}.\n",
        match dp_scope {
            GradientScope::DecoderOnly => "the client decoders only (dec_dp)",
            GradientScope::WholeModel => "the whole client VAE",
        },
        match prior {
            PriorKind::Gmm => "gmm (fitted on private latents)",
            PriorKind::StandardNormal => "standard-normal",
        }
    );
    let _ = writeln!(
        md,
        "| client | ε spent | δ | σ | q | steps | accountant | clipping | final C | noise | sampling | guarantee |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---|---|---:|---|---|---|");
    for (k, c) in clients.iter().enumerate() {
        let _ = writeln!(
            md,
            "| {k} | {:.4} | {:e} | {:.4} | {:.5} | {} | {} | {} | {:.4} | {} | {} | {} |",
            c.epsilon,
            c.delta,
            c.noise_multiplier,
            c.sampling_rate,
            c.steps,
            spelled(&c.accountant),
            spelled(&c.clipping),
            c.final_clip_norm,
            spelled(&c.noise),
            spelled(&c.sampling),
            if c.guarantee_holds { "holds" } else { "does not hold" }
        );
    }
    let _ =
        writeln!(md, "\nEverything released per client (the main strategy's model and every baseline's, composed):\n");
    let _ = writeln!(md, "| client | models | ε | δ |");
    let _ = writeln!(md, "|---:|---:|---:|---:|");
    for (k, r) in release.iter().enumerate() {
        let _ = writeln!(md, "| {k} | {} | {:.4} | {:e} |", r.trainings, r.epsilon, r.delta);
    }
    let mut reasons: Vec<&String> = release.iter().flat_map(|c| &c.reasons).collect();
    reasons.sort();
    reasons.dedup();
    for r in reasons {
        let _ = writeln!(md, "\n* Not covered: {r}.");
    }
    if *training_images_shown {
        let _ = writeln!(
            md,
            "\n* Not covered: the outlier analysis reads client 0's raw training images, and its figures show some \
             (privacy.show_training_images)."
        );
    }
    let _ = writeln!(md);
}

/// Writes `report.json` and `report.md` into `dir`.
pub fn write(dir: &Path, report: &Report) -> Result<()> {
    let json = serde_json::to_string_pretty(report).expect("a report serialises");
    write_file(&dir.join("report.json"), json)?;
    write_file(&dir.join("report.md"), markdown(report))
}

/// Reads the report a finished run wrote into `dir` (its `report.json`).
pub fn read(dir: &Path) -> Result<Report> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path).map_err(|e| crate::PipelineError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        crate::PipelineError::Config(format!(
            "{} is not a report this align-fl writes ({e}); run the experiment again into a new folder",
            path.display()
        ))
    })
}

/// `report.md`.
fn markdown(report: &Report) -> String {
    let main = &report.main;
    let mut md = String::new();
    let cfg = &report.config;
    let _ = writeln!(md, "# align-fl run: {}\n", main.strategy.as_str());
    let _ = writeln!(
        md,
        "Dataset {}, {} clients, {} rounds, seed {}, backend {}, {} threads, data from `{}`.\n",
        cfg.dataset.display_name(),
        cfg.partition.clients,
        cfg.rounds,
        cfg.seed,
        report.backend,
        report.threads,
        report.data_dir
    );
    privacy_section(&mut md, report.privacy.as_ref());
    let _ = writeln!(md, "## Comparison (final round)\n");
    let _ = writeln!(
        md,
        "| strategy | accuracy | F1 | Lipschitz (max ‖g‖) | spectral bound | pairwise | outliers mapped to typical (client / global) | uplink bytes / round | FID | wall s |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---|---:|---|---:|");
    for run in std::iter::once(main).chain(report.baselines.values()) {
        let f = &run.final_metrics;
        let up = run.rounds.last().map_or(0, |r| r.uplink_bytes);
        let mapped = run.outliers.as_ref().map_or("—".to_string(), |o| {
            format!("{:.3} / {:.3}", o.client.fraction_mapped_to_typical, o.global.fraction_mapped_to_typical)
        });
        let _ = writeln!(
            md,
            "| {} | {:.4} | {:.4} | {:.3} | {:.3e} | {:.3} | {mapped} | {} | {} | {:.1} |",
            run.strategy.as_str(),
            f.accuracy,
            f.f1,
            f.lipschitz_decoder,
            f.lipschitz_spectral_bound,
            f.lipschitz_pairwise,
            up,
            fid_cell(f.fid),
            run.wall_seconds
        );
    }
    match &report.fid_note {
        Some(note) => {
            let _ = writeln!(md, "\nFID not computed: {note}");
        }
        None => {
            let _ = writeln!(
                md,
                "\nFID: the evaluation images against {} images decoded from z ~ N(0, I) by the global decoder, on Inception v3 \
                 pool3 features (FID graph 2015-12-05).",
                cfg.fid.samples
            );
        }
    }
    for run in std::iter::once(main).chain(report.baselines.values()) {
        let _ = writeln!(md, "\n## {}\n", run.strategy.as_str());
        for w in &run.warnings {
            let _ = writeln!(md, "**{w}**\n");
        }
        run_table(&mut md, run);
        if let Some(o) = &run.outliers {
            let _ = writeln!(
                md,
                "\nOutliers at client 0 ({} images of the other dataset), reconstructed:\n",
                o.client.count
            );
            let _ = writeln!(md, "| through | mean distance to the outlier | mean distance to the nearest in-domain image | mapped to typical data |");
            let _ = writeln!(md, "|---|---:|---:|---:|");
            for (who, st) in [("client 0's VAE", &o.client), ("global VAE", &o.global)] {
                let _ = writeln!(
                    md,
                    "| {who} | {:.3} | {:.3} | {:.3} |",
                    st.mean_distance_to_outlier, st.mean_distance_to_nearest_typical, st.fraction_mapped_to_typical
                );
            }
        }
        for fig in &run.figures {
            let _ = writeln!(md, "\n![{fig}]({fig})");
        }
    }
    let _ = writeln!(
        md,
        "\nAccuracy and F1: multinomial logistic regression (C = 1) on the global encoder's μ of the evaluation set, stratified 80/20 split. \
         Lipschitz: max over evaluation latents of ‖∂Σ decoder(z)/∂z‖. Latent figures colour classes with the tab10 palette (class 0 blue, 1 orange, 2 green, 3 red, 4 purple, 5 brown, 6 pink, 7 grey, 8 olive, 9 cyan)."
    );
    md
}
