//! `align-fl run`: partition the data, run the main strategy and its baselines round by round,
//! evaluate after every round, keep the last good checkpoint, write the report and figures.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use data::{Partition, Samples};
use federation::{
    derive_seed, AlignFl, AlignFlSettings, Client, ClientPrivacy, FedAvg, Federation, LocalTraining, PriorKind, Stream,
};
use privacy::{Clipping, DpSgd, DpSgdSettings, NoiseSource, Sampling};
use rand::SeedableRng;
use rayon::prelude::*;
use tensor_kernels::Backend;
use vae::{LatentPrior, TrainOptions, Vae};

use crate::config::{ClippingName, ExperimentConfig, MechanismName, NoiseName, PriorName, SamplingName, StrategyName};
use crate::fid::FidScorer;
use crate::progress::Bars;
use crate::report::{self, FinalMetrics, OutlierReport, PrivacyReport, Report, RoundRecord, StrategyRun};

/// Latents drawn for the sample-grid figure.
const GRID_SAMPLES: usize = 100;

/// Loads the data the config asks for and cuts the partition.
pub fn load_partition(cfg: &ExperimentConfig, data_dir: &Path) -> Result<Partition> {
    let kind = cfg.dataset.kind();
    let train = data::load_split(data_dir, kind, data::Split::Train)?;
    let test = data::load_split(data_dir, kind, data::Split::Test)?;
    let other = if cfg.partition.outliers > 0 {
        data::load_split(data_dir, kind.other(), data::Split::Train)?
    } else {
        data::LabelledImages { pixels: Vec::new(), labels: Vec::new() }
    };
    Ok(cfg.partition_spec().cut(&train, &test, &other)?)
}

fn build_federation<B: Backend>(
    backend: &B,
    cfg: &ExperimentConfig,
    partition: &Partition,
    strategy: StrategyName,
    sigmas: &HashMap<usize, f64>,
) -> Result<Federation<B>> {
    let seed = cfg.seed;
    let mut clients = Vec::with_capacity(partition.clients.len());
    for (k, shard) in partition.clients.iter().enumerate() {
        let client = Client::new(backend, k, shard.samples.pixels.clone(), &cfg.client_model(k).vae(), seed)?;
        clients.push(match dp_sgd_for(cfg, k, client.num_samples(), sigmas)? {
            Some(privacy) => client.with_dp_sgd(privacy),
            None => client,
        });
    }
    let global_cfg = if strategy == StrategyName::AlignFl { cfg.global_model().vae() } else { cfg.model.vae() };
    let global = Vae::new(backend, &global_cfg, derive_seed(seed, Stream::GlobalInit, 0, 0))?;
    let c = &cfg.client;
    let options = |kl_weight| TrainOptions {
        batch_size: c.batch_size,
        learning_rate: c.learning_rate,
        kl_weight,
        lipschitz_penalty: cfg.privacy.lipschitz_weight(),
        penalty_on: cfg.privacy.lipschitz_at,
    };
    let strategy: Box<dyn federation::Strategy<B>> = match strategy {
        StrategyName::AlignFl => {
            let s = &cfg.server;
            Box::new(AlignFl::new(
                global,
                AlignFlSettings {
                    synthetic_samples: s.synthetic_samples,
                    server_epochs: s.server_epochs,
                    server_training: TrainOptions {
                        batch_size: s.batch_size,
                        learning_rate: s.learning_rate,
                        kl_weight: s.lambda_kl,
                        ..TrainOptions::default()
                    },
                    prior: match effective_prior(cfg) {
                        PriorName::Gmm => PriorKind::Gmm { components: c.gmm_components },
                        PriorName::StandardNormal => PriorKind::StandardNormal,
                    },
                    local: LocalTraining { epochs: c.local_epochs, options: options(c.lambda_kl) },
                },
                seed,
            ))
        }
        StrategyName::Fedavg => Box::new(FedAvg::new(
            global,
            LocalTraining { epochs: c.local_epochs, options: options(cfg.fedavg.lambda_kl) },
        )),
        StrategyName::Fedprox => Box::new(FedAvg::fedprox(
            global,
            LocalTraining { epochs: c.local_epochs, options: options(cfg.fedavg.lambda_kl) },
            cfg.fedavg.fedprox_mu,
        )),
    };
    Ok(Federation::new(clients, strategy)?)
}

/// The prior clients upload: under DP-SGD, N(0, I) unless the non-private GMM is allowed.
fn effective_prior(cfg: &ExperimentConfig) -> PriorName {
    let dp = &cfg.privacy;
    if dp.mechanism == MechanismName::DpSgd && !dp.allow_non_private_prior {
        PriorName::StandardNormal
    } else {
        cfg.client.prior
    }
}

/// DP-SGD's noise multiplier for each distinct client size N: the σ at which ⌈N/b⌉ · epochs ·
/// rounds Poisson-sampled steps at q = b/N reach the target ε at δ. Sizes are calibrated in
/// parallel; empty without DP-SGD.
fn calibrate_clients(cfg: &ExperimentConfig, partition: &Partition) -> Result<HashMap<usize, f64>> {
    let dp = &cfg.privacy;
    if dp.mechanism != MechanismName::DpSgd {
        return Ok(HashMap::new());
    }
    let batch = cfg.client.batch_size;
    let mut sizes: Vec<usize> = partition.clients.iter().map(|c| c.samples.len()).collect();
    sizes.sort_unstable();
    sizes.dedup();
    if let Some(&n) = sizes.iter().find(|&&n| n < batch) {
        anyhow::bail!("a client holds {n} samples, fewer than one batch of {batch}: DP-SGD needs q = batch/N ≤ 1");
    }
    sizes
        .into_par_iter()
        .map(|n| {
            let q = batch as f64 / n as f64;
            let steps = (n.div_ceil(batch) * cfg.client.local_epochs * cfg.rounds) as u64;
            let (sigma, _) = privacy::calibrate_noise_multiplier(dp.accountant.kind(), dp.epsilon, dp.delta, q, steps)
                .with_context(|| format!("calibrating the noise for a client with {n} samples"))?;
            Ok((n, sigma))
        })
        .collect()
}

/// Client k's DP-SGD with the calibrated σ for its size.
fn dp_sgd_for(
    cfg: &ExperimentConfig,
    k: usize,
    num_samples: usize,
    sigmas: &HashMap<usize, f64>,
) -> Result<Option<ClientPrivacy>> {
    let dp = &cfg.privacy;
    let Some(&sigma) = sigmas.get(&num_samples) else {
        return Ok(None);
    };
    let batch = cfg.client.batch_size;
    let accountant = dp.accountant.kind();
    let settings = DpSgdSettings {
        noise_multiplier: sigma,
        max_grad_norm: dp.max_grad_norm,
        clipping: match dp.clipping {
            ClippingName::Fixed => Clipping::Fixed,
            ClippingName::PaperMedian => Clipping::PaperMedian,
            ClippingName::Adaptive => Clipping::Adaptive {
                target_quantile: dp.target_quantile,
                learning_rate: dp.clip_learning_rate,
                count_noise: dp.count_noise.unwrap_or(batch as f64 / 20.0),
            },
        },
        sampling: match dp.sampling {
            SamplingName::Poisson => Sampling::Poisson,
            SamplingName::Shuffled => Sampling::Shuffled,
        },
        noise: match dp.noise {
            NoiseName::Secure => NoiseSource::Secure,
            NoiseName::Reproducible => NoiseSource::Reproducible { seed: cfg.seed },
        },
        scope: dp.scope,
    };
    let dp_sgd = DpSgd::new(settings, num_samples, batch, k as u64).with_context(|| format!("client {k}'s DP-SGD"))?;
    Ok(Some(ClientPrivacy { dp_sgd, delta: dp.delta, accountant }))
}

/// Distance between the latent pairs of the pairwise Lipschitz estimate.
const PAIRWISE_RADIUS: f32 = 0.05;

/// What the global model scores on the evaluation set.
struct Evaluation {
    score: metrics::ProbeScore,
    /// max ‖∂Σ decoder/∂z‖ at the evaluation latents.
    gradient: f64,
    spectral_bound: f64,
    pairwise: f64,
    mu: Vec<f32>,
}

/// Probe accuracy / F1 and the decoder's three Lipschitz numbers on the evaluation set.
fn evaluate<B: Backend>(global: &mut Vae<B>, eval: &Samples, seed: u64) -> Result<Evaluation> {
    let mu = global.encode_mean(&eval.pixels);
    let score = metrics::linear_probe(&mu, global.config().latent, &eval.labels, seed)?;
    let gradient = metrics::decoder_lipschitz(global.decoder(), &mu);
    let spectral_bound = metrics::spectral_norm_product(&global.weights().decoder);
    let pairwise = metrics::pairwise_lipschitz(global.decoder(), &mu, PAIRWISE_RADIUS, seed);
    Ok(Evaluation { score, gradient, spectral_bound, pairwise, mu })
}

/// Client 0's outliers through its own final VAE and through the global VAE, measured against
/// every client's in-domain training images; writes `outliers-<strategy>.png` (rows: outliers,
/// client reconstructions, global reconstructions).
fn outlier_analysis<B: Backend>(
    fed: &mut Federation<B>,
    partition: &Partition,
    name: &str,
    out: &Path,
) -> Result<Option<(OutlierReport, String)>> {
    let c0 = &partition.clients[0];
    if c0.outliers == 0 {
        return Ok(None);
    }
    let dim = data::IMAGE_PIXELS;
    let first_outlier = c0.samples.len() - c0.outliers;
    let outliers = &c0.samples.pixels[first_outlier * dim..];
    let references: Vec<&[f32]> = partition
        .clients
        .iter()
        .enumerate()
        .map(|(k, c)| if k == 0 { &c.samples.pixels[..first_outlier * dim] } else { &c.samples.pixels[..] })
        .collect();
    let reconstruct = |model: &mut Vae<B>| {
        let mu = model.encode_mean(outliers);
        model.decoder().decode(&mu)
    };
    let client_recon = reconstruct(fed.clients_mut()[0].model());
    let global_recon = reconstruct(fed.global_model());
    let backend = fed.global_model().backend().clone();
    let report = OutlierReport {
        client: metrics::outlier_stats(&backend, outliers, &client_recon, &references, dim)?,
        global: metrics::outlier_stats(&backend, outliers, &global_recon, &references, dim)?,
    };
    let shown = c0.outliers.min(10);
    let mut grid = Vec::with_capacity(3 * shown * dim);
    for source in [outliers, &client_recon[..], &global_recon[..]] {
        grid.extend_from_slice(&source[..shown * dim]);
    }
    let figure = format!("outliers-{name}.png");
    metrics::sample_grid(&out.join(&figure), &grid, data::IMAGE_SIDE, shown)?;
    Ok(Some((report, figure)))
}

/// Runs one strategy for all rounds, writing its checkpoint and figures into `out`.
fn run_strategy<B: Backend>(
    backend: &B,
    cfg: &ExperimentConfig,
    partition: &Partition,
    strategy: StrategyName,
    out: &Path,
    sigmas: &HashMap<usize, f64>,
    fid: Option<&FidScorer<B>>,
) -> Result<StrategyRun> {
    let name = strategy.as_str();
    let start = Instant::now();
    let mut fed = build_federation(backend, cfg, partition, strategy, sigmas)?;
    let checkpoint = out.join(format!("{name}-global.safetensors"));
    let bars = Bars::new(name, cfg.rounds, partition.clients.len(), strategy == StrategyName::AlignFl);
    let mut rounds = Vec::with_capacity(cfg.rounds);
    let mut last_mu = Vec::new();
    let mut last_privacy = Vec::new();
    for _ in 0..cfg.rounds {
        let t0 = Instant::now();
        let outcome = fed.run_round(&bars).map_err(|e| {
            bars.finish();
            let kept = if rounds.is_empty() {
                "no round completed, so no checkpoint was written".to_string()
            } else {
                format!("the last good global model (round {}) is kept at {}", rounds.len(), checkpoint.display())
            };
            anyhow::anyhow!("{name}: {e}\n  {kept}")
        })?;
        let global = fed.global_model();
        let e = evaluate(global, &partition.eval, cfg.seed)?;
        vae::save_checkpoint(&checkpoint, global.config(), &global.weights())?;
        let wanted = outcome.round == cfg.rounds || (cfg.fid.every > 0 && outcome.round % cfg.fid.every == 0);
        let fid = match fid.filter(|_| wanted) {
            Some(scorer) => Some(
                scorer.score(global.decoder(), derive_seed(cfg.seed, Stream::FidSamples, 0, outcome.round as u64))?,
            ),
            None => None,
        };
        let record = RoundRecord {
            round: outcome.round,
            accuracy: e.score.accuracy,
            f1: e.score.f1,
            lipschitz_decoder: e.gradient,
            lipschitz_spectral_bound: e.spectral_bound,
            lipschitz_pairwise: e.pairwise,
            uplink_bytes: outcome.uplink_bytes,
            seconds: t0.elapsed().as_secs_f64(),
            client_loss: outcome.client_losses.iter().map(|l| l.total).collect(),
            server_loss: outcome.server.train_loss.map(|l| l.total),
            synthetic_samples: outcome.server.synthetic_samples,
            fid,
        };
        last_privacy = outcome.client_privacy;
        let summary = format!("acc {:.4} F1 {:.4} Lip {:.2}", record.accuracy, record.f1, record.lipschitz_decoder);
        let fid_text = record.fid.map_or(String::new(), |f| format!(", FID {f:.2}"));
        bars.println(&format!(
            "{name} round {}: accuracy {:.4}, F1 {:.4}, decoder Lipschitz {:.3}{fid_text}, uplink {} B, {:.1} s",
            record.round, record.accuracy, record.f1, record.lipschitz_decoder, record.uplink_bytes, record.seconds
        ));
        bars.round_done(&summary);
        rounds.push(record);
        last_mu = e.mu;
    }
    bars.finish();
    let mut figures = write_figures(fed.global_model(), &partition.eval, &last_mu, cfg.seed, name, out)?;
    let outliers = outlier_analysis(&mut fed, partition, name, out)?.map(|(report, figure)| {
        figures.push(figure);
        report
    });
    let last = rounds.last().expect("at least one round");
    Ok(StrategyRun {
        strategy: name.to_string(),
        final_metrics: FinalMetrics {
            accuracy: last.accuracy,
            f1: last.f1,
            lipschitz_decoder: last.lipschitz_decoder,
            lipschitz_spectral_bound: last.lipschitz_spectral_bound,
            lipschitz_pairwise: last.lipschitz_pairwise,
            fid: last.fid,
        },
        rounds,
        wall_seconds: start.elapsed().as_secs_f64(),
        checkpoint: checkpoint.display().to_string(),
        figures,
        client_privacy: last_privacy.into_iter().flatten().collect(),
        outliers,
    })
}

fn write_figures<B: Backend>(
    global: &mut Vae<B>,
    eval: &Samples,
    mu: &[f32],
    seed: u64,
    name: &str,
    out: &Path,
) -> Result<Vec<String>> {
    let d = global.config().latent;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let z = LatentPrior::StandardNormal { dim: d }.sample(GRID_SAMPLES, &mut rng);
    let images = global.decoder().decode(&z);
    let grid = format!("samples-{name}.png");
    metrics::sample_grid(&out.join(&grid), &images, data::IMAGE_SIDE, 10)?;
    let scatter = format!("latent-{name}.png");
    metrics::latent_scatter(&out.join(&scatter), &metrics::project_2d(mu, d), &eval.labels, 600)?;
    Ok(vec![grid, scatter])
}

/// Runs the experiment on `backend` and writes everything into `out`; returns the report.
pub fn run_experiment<B: Backend>(backend: &B, cfg: &ExperimentConfig, data_dir: &Path, out: &Path) -> Result<Report> {
    cfg.validate()?;
    let partition = load_partition(cfg, data_dir)?;
    let fid = fid_scorer(backend, cfg, &partition)?;
    run_on_partition(backend, cfg, &Prepared { data_dir, partition: &partition, fid: &fid }, out)
}

/// What an experiment needs besides its config, loaded once and shared by experiments on the
/// same data (as `align-fl reproduce` does).
pub struct Prepared<'a, B: Backend> {
    /// Where the data came from (for the report).
    pub data_dir: &'a Path,
    /// The partition `cfg` asks for.
    pub partition: &'a Partition,
    /// The FID scorer of the partition's evaluation set, or why there is none.
    pub fid: &'a (Option<FidScorer<B>>, Option<String>),
}

/// Runs the experiment on an already loaded partition and writes everything into `out`.
pub fn run_on_partition<B: Backend>(
    backend: &B,
    cfg: &ExperimentConfig,
    prepared: &Prepared<'_, B>,
    out: &Path,
) -> Result<Report> {
    cfg.validate()?;
    let total = Instant::now();
    std::fs::create_dir_all(out).with_context(|| format!("creating output directory {}", out.display()))?;
    let partition = prepared.partition;
    eprintln!(
        "align-fl: {} clients ({} samples, {} outliers at client 0), evaluation set of {} images from {}",
        partition.clients.len(),
        partition.clients.iter().map(|c| c.samples.len()).sum::<usize>(),
        partition.clients[0].outliers,
        partition.eval.len(),
        prepared.data_dir.display()
    );
    // Every strategy's clients share the calibrated noise: compute it once.
    let sigmas = calibrate_clients(cfg, partition)?;
    let (scorer, fid_note) = prepared.fid;
    let fid = scorer.as_ref();
    let main = run_strategy(backend, cfg, partition, cfg.strategy, out, &sigmas, fid)?;
    let mut baselines = BTreeMap::new();
    for &b in cfg.compare.iter().filter(|&&b| b != cfg.strategy) {
        baselines.insert(b.as_str().to_string(), run_strategy(backend, cfg, partition, b, out, &sigmas, fid)?);
    }
    let report = Report {
        config: cfg.clone(),
        strategy: main.strategy.clone(),
        backend: backend.name().to_string(),
        threads: rayon::current_num_threads(),
        data_dir: prepared.data_dir.display().to_string(),
        rounds: main.rounds.clone(),
        final_metrics: main.final_metrics.clone(),
        privacy: privacy_report(cfg, &main),
        outliers: main.outliers.clone(),
        baselines,
        wall_seconds: main.wall_seconds,
        total_wall_seconds: total.elapsed().as_secs_f64(),
        fid_note: fid_note.clone(),
    };
    report::write(out, &report, &main)?;
    Ok(report)
}

/// The FID scorer, or why there is none: FID disabled, or the Inception weights missing (a
/// warning, not an error: the rest of the run does not need them). Damaged weights are an error.
pub fn fid_scorer<B: Backend>(
    backend: &B,
    cfg: &ExperimentConfig,
    partition: &Partition,
) -> Result<(Option<FidScorer<B>>, Option<String>)> {
    if !cfg.fid.enabled {
        return Ok((None, Some("disabled (fid.enabled = false or --no-fid)".into())));
    }
    match metrics::locate_inception_weights(cfg.fid.weights.as_deref()) {
        Ok(path) => Ok((Some(FidScorer::new(backend, &path, &cfg.fid, &partition.eval.pixels)?), None)),
        Err(e) => {
            eprintln!("warning: FID skipped. {e}");
            Ok((None, Some(e.to_string())))
        }
    }
}

/// The report's `privacy` object: None without a mechanism.
fn privacy_report(cfg: &ExperimentConfig, main: &StrategyRun) -> Option<PrivacyReport> {
    let dp = &cfg.privacy;
    let prior = match effective_prior(cfg) {
        PriorName::Gmm if dp.mechanism == MechanismName::DpSgd => "gmm (fitted on private latents)".to_string(),
        PriorName::Gmm => "gmm".to_string(),
        PriorName::StandardNormal => "standard-normal".to_string(),
    };
    match dp.mechanism {
        MechanismName::None | MechanismName::DpSgdLipschitz => None,
        MechanismName::DpSgd => Some(PrivacyReport {
            mechanism: "dp-sgd".into(),
            target_epsilon: Some(dp.epsilon),
            delta: Some(dp.delta),
            dp_scope: Some(dp.scope),
            lambda_lip: None,
            lipschitz_at: None,
            prior,
            guarantee_holds: main.client_privacy.iter().all(|c| c.guarantee_holds),
            clients: main.client_privacy.clone(),
        }),
        MechanismName::Lipschitz => Some(PrivacyReport {
            mechanism: "lipschitz".into(),
            target_epsilon: None,
            delta: None,
            dp_scope: None,
            lambda_lip: Some(dp.lambda_lip),
            lipschitz_at: Some(dp.lipschitz_at),
            prior,
            guarantee_holds: false,
            clients: Vec::new(),
        }),
    }
}

/// The data directory: `--data-dir`, else the config's `data_dir`, else `$ALIGN_FL_DATA`, else `./data`.
pub fn data_dir(flag: Option<&Path>, cfg: &ExperimentConfig) -> PathBuf {
    data::resolve_data_dir(flag.or(cfg.data_dir.as_deref()))
}
