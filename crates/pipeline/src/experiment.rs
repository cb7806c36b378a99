//! One experiment: partition the data, run the main strategy and its baselines round by round,
//! evaluate after every round, keep the last good checkpoint, score FID, analyse the outliers,
//! write the report and figures.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use data::{ImageSet, Partition, Samples};
use federation::{
    derive_seed, AlignFl, AlignFlSettings, Client, ClientPrivacy, FedAvg, Federation, LocalTraining, Stream,
};
use metrics::FidScorer;
use privacy::DpSgd;
use rand::SeedableRng;
use rayon::prelude::*;
use tensor_kernels::{ImageOps, TrainingOps};
use vae::{LatentPrior, TrainOptions, Vae};

use crate::config::{ExperimentConfig, Mechanism, StrategyKind};
use crate::figures::FigureKind;
use crate::metrics_log;
use crate::observer::Observer;
use crate::out_dir::{create_dir, write_file};
use crate::report::{self, FinalMetrics, OutlierReport, PrivacyReport, Report, RoundRecord, StrategyRun};
use crate::{PipelineError, Result};

/// Latents drawn for the sample-grid figure.
const GRID_SAMPLES: usize = 100;

/// Loads the data the config asks for and cuts the partition.
pub fn load_partition(cfg: &ExperimentConfig, data_dir: &Path) -> Result<Partition> {
    let kind = cfg.dataset;
    let train = data::load_split(data_dir, kind, data::Split::Train)?;
    let test = data::load_split(data_dir, kind, data::Split::Test)?;
    let other = if cfg.partition.outliers > 0 {
        data::load_split(data_dir, kind.other(), data::Split::Train)?
    } else {
        data::LabelledImages { pixels: Vec::new(), labels: Vec::new() }
    };
    Ok(cfg.partition_spec().cut(&train, &test, &other)?)
}

/// Client k, training on `pixels` (n × 784 in [0, 1]), with its initial model and, under DP-SGD,
/// its calibrated noise.
pub(crate) fn build_client<B: TrainingOps>(
    backend: &B,
    cfg: &ExperimentConfig,
    k: usize,
    pixels: Vec<f32>,
    sigmas: &HashMap<usize, f64>,
) -> Result<Client<B>> {
    let client = Client::new(backend, k, pixels, &cfg.client_model(k).vae(), cfg.seed)?;
    Ok(match dp_sgd_for(cfg, k, client.num_samples(), sigmas)? {
        Some(privacy) => client.with_dp_sgd(privacy),
        None => client,
    })
}

/// The server's strategy around its initial global model.
pub(crate) fn build_strategy<B: TrainingOps>(
    backend: &B,
    cfg: &ExperimentConfig,
    strategy: StrategyKind,
) -> Result<Box<dyn federation::Strategy<B>>> {
    let seed = cfg.seed;
    let global_cfg = if strategy == StrategyKind::AlignFl { cfg.global_model().vae() } else { cfg.model.vae() };
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
        StrategyKind::AlignFl => {
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
                    prior: cfg.prior(),
                    local: LocalTraining { epochs: c.local_epochs, options: options(c.lambda_kl) },
                },
                seed,
            ))
        }
        StrategyKind::Fedavg => Box::new(FedAvg::new(
            global,
            LocalTraining { epochs: c.local_epochs, options: options(cfg.fedavg.lambda_kl) },
        )),
        StrategyKind::Fedprox => Box::new(FedAvg::fedprox(
            global,
            LocalTraining { epochs: c.local_epochs, options: options(cfg.fedavg.lambda_kl) },
            cfg.fedavg.fedprox_mu,
        )),
    };
    Ok(strategy)
}

/// DP-SGD's noise multiplier for each distinct client size N: the σ at which ⌈N/b⌉ · epochs ·
/// rounds Poisson-sampled steps at q = b/N reach the target ε at δ. Sizes are calibrated in
/// parallel; empty without DP-SGD.
pub(crate) fn calibrate_clients(
    cfg: &ExperimentConfig,
    sizes: impl IntoIterator<Item = usize>,
) -> Result<HashMap<usize, f64>> {
    let dp = &cfg.privacy;
    if dp.mechanism != Mechanism::DpSgd {
        return Ok(HashMap::new());
    }
    let batch = cfg.client.batch_size;
    let mut sizes: Vec<usize> = sizes.into_iter().collect();
    sizes.sort_unstable();
    sizes.dedup();
    if let Some(&n) = sizes.iter().find(|&&n| n < batch) {
        return Err(PipelineError::Config(format!(
            "a client holds {n} samples, fewer than one batch of {batch}: DP-SGD needs q = batch/N ≤ 1"
        )));
    }
    sizes
        .into_par_iter()
        .map(|n| {
            let q = batch as f64 / n as f64;
            let steps = (n.div_ceil(batch) * cfg.client.local_epochs * cfg.rounds) as u64;
            let (sigma, _) = privacy::calibrate_noise_multiplier(dp.accountant, dp.epsilon, dp.delta, q, steps)
                .map_err(|e| {
                    PipelineError::from(e).within(format!("calibrating the noise for a client with {n} samples"))
                })?;
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
    let settings = dp.dp_sgd_settings(sigma, cfg.client.batch_size, cfg.seed);
    let dp_sgd = DpSgd::new(settings, num_samples, cfg.client.batch_size, k as u64)
        .map_err(|e| PipelineError::from(e).within(format!("client {k}'s DP-SGD")))?;
    Ok(Some(ClientPrivacy { dp_sgd, delta: dp.delta, accountant: dp.accountant }))
}

/// Distance between the latent pairs of the pairwise Lipschitz estimate.
const PAIRWISE_RADIUS: f32 = 0.05;

/// A warning when the final global model scores near chance on the evaluation set (within 1.5×
/// the share of its most common class): training collapsed, whatever the loss says.
fn collapse_warning(strategy: StrategyKind, accuracy: f64, eval: &Samples) -> Option<String> {
    let mut counts = [0usize; 256];
    eval.labels.iter().for_each(|&l| counts[usize::from(l)] += 1);
    let chance = counts.iter().copied().max().unwrap_or(0) as f64 / eval.labels.len().max(1) as f64;
    (accuracy <= 1.5 * chance).then(|| {
        format!(
            "warning: {}'s global model collapsed: final accuracy {accuracy:.4} is near chance ({chance:.4}); \
             check the learning rates (client.learning_rate, server.learning_rate) and β",
            strategy.as_str()
        )
    })
}

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
fn evaluate<B: TrainingOps + ImageOps>(global: &mut Vae<B>, eval: &Samples, seed: u64) -> Result<Evaluation> {
    let mu = global.encode_mean(&eval.pixels);
    let score = metrics::linear_probe(&mu, global.config().latent, &eval.labels, seed)?;
    let gradient = metrics::decoder_lipschitz(global.decoder(), &mu);
    let spectral_bound = metrics::spectral_norm_product(&global.weights().decoder);
    let pairwise = metrics::pairwise_lipschitz(global.decoder(), &mu, PAIRWISE_RADIUS, seed);
    Ok(Evaluation { score, gradient, spectral_bound, pairwise, mu })
}

/// Client 0's outliers, measured through its own final VAE against every client's in-domain
/// training images: the half of the outlier analysis that every server on these clients shares.
struct ClientOutliers<'p> {
    outliers: &'p [f32],
    references: Vec<&'p [f32]>,
    reconstructions: Vec<f32>,
    stats: metrics::OutlierStats,
}

impl<'p> ClientOutliers<'p> {
    /// Measures client 0's side; `None` when client 0 holds no outliers.
    fn measure<B: TrainingOps + ImageOps>(fed: &mut Federation<B>, partition: &'p Partition) -> Result<Option<Self>> {
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
        let client = fed.clients_mut()[0].model();
        let reconstructions = reconstruct(client, outliers);
        let stats = metrics::outlier_stats(client.backend(), outliers, &reconstructions, &references, dim)?;
        Ok(Some(Self { outliers, references, reconstructions, stats }))
    }

    /// The same outliers through server `server`'s global VAE; writes `outliers-<strategy>.png`
    /// (rows: outliers, client reconstructions, global reconstructions).
    fn against_global<B: TrainingOps + ImageOps>(
        &self,
        fed: &mut Federation<B>,
        server: usize,
        strategy: StrategyKind,
        out: &Path,
    ) -> Result<(OutlierReport, String)> {
        let dim = data::IMAGE_PIXELS;
        let global = fed.global_model_of(server);
        let global_recon = reconstruct(global, self.outliers);
        let report = OutlierReport {
            client: self.stats,
            global: metrics::outlier_stats(global.backend(), self.outliers, &global_recon, &self.references, dim)?,
        };
        let shown = (self.outliers.len() / dim).min(10);
        let mut grid = Vec::with_capacity(3 * shown * dim);
        for source in [self.outliers, &self.reconstructions[..], &global_recon[..]] {
            grid.extend_from_slice(&source[..shown * dim]);
        }
        let figure = FigureKind::Outliers.of_strategy(strategy);
        write_file(&out.join(&figure), metrics::sample_grid(&grid, data::IMAGE_SIDE, shown)?)?;
        Ok((report, figure))
    }
}

/// `images` through `model`'s encoder mean and decoder.
fn reconstruct<B: TrainingOps + ImageOps>(model: &mut Vae<B>, images: &[f32]) -> Vec<f32> {
    let mu = model.encode_mean(images);
    model.decoder().decode(&mu)
}

/// What every strategy of one experiment shares.
struct Shared<'a, B: TrainingOps + ImageOps> {
    backend: &'a B,
    cfg: &'a ExperimentConfig,
    partition: &'a Partition,
    out: &'a Path,
    /// DP-SGD's noise multiplier per client size (empty without DP-SGD).
    sigmas: HashMap<usize, f64>,
    fid: Option<&'a FidScorer<B>>,
    observer: &'a dyn Observer,
}

/// Runs one strategy for all rounds, writing its checkpoint and figures into `out`.
fn run_strategy<B: TrainingOps + ImageOps>(shared: &Shared<'_, B>, strategy: StrategyKind) -> Result<StrategyRun> {
    Ok(run_servers(shared, strategy, &[(shared.cfg, shared.out)])?.swap_remove(0))
}

/// Runs `strategy` for all rounds on one set of clients (as `shared.cfg` builds them) with one
/// server per entry of `servers` (its config and folder), writing each server's checkpoint and
/// figures into its folder. Each run's wall time is what it would take alone: the clients' time
/// counts for every server.
fn run_servers<B: TrainingOps + ImageOps>(
    shared: &Shared<'_, B>,
    strategy: StrategyKind,
    servers: &[(&ExperimentConfig, &Path)],
) -> Result<Vec<StrategyRun>> {
    let Shared { backend, cfg, partition, ref sigmas, fid, observer, .. } = *shared;
    let name = strategy.as_str();
    let setup = Instant::now();
    let clients = (0..partition.clients.len())
        .map(|k| build_client(backend, cfg, k, partition.clients[k].samples.pixels.clone(), sigmas))
        .collect::<Result<Vec<_>>>()?;
    let strategies = servers.iter().map(|&(c, _)| build_strategy(backend, c, strategy)).collect::<Result<_>>()?;
    let mut fed = Federation::with_servers(clients, strategies)?;
    let recorders: Vec<RoundRecorder<'_, B>> = servers
        .iter()
        .map(|&(cfg, out)| RoundRecorder { cfg, eval: &partition.eval, fid, observer, out, strategy })
        .collect();
    let mut alone = vec![setup.elapsed(); servers.len()];
    let bars = observer.strategy_started(strategy, cfg.rounds, partition.clients.len());
    let mut rounds = vec![Vec::with_capacity(cfg.rounds); servers.len()];
    let mut last_mu = vec![Vec::new(); servers.len()];
    let mut last_privacy = Vec::new();
    for completed in 0..cfg.rounds {
        let outcomes = fed.run_round_on_every_server(bars.as_ref()).map_err(|error| {
            bars.finished();
            let kept = recorders.iter().map(|r| r.kept(completed)).collect::<Vec<_>>().join("; ");
            PipelineError::Training { strategy: name, error, kept }
        })?;
        for (k, (outcome, took)) in outcomes.into_iter().enumerate() {
            let recording = Instant::now();
            let started = recording.checked_sub(took).unwrap_or(recording);
            let (record, mu) = recorders[k].record(fed.global_model_of(k), &outcome, started, Vec::new())?;
            alone[k] += took + recording.elapsed();
            last_privacy = outcome.client_privacy;
            bars.round_finished(strategy, &record);
            rounds[k].push(record);
            last_mu[k] = mu;
        }
    }
    bars.finished();
    let privacy: Vec<_> = last_privacy.into_iter().flatten().collect();
    let analysing = Instant::now();
    let client_outliers = if recorders.iter().any(|r| r.cfg.analyses_training_images()) {
        ClientOutliers::measure(&mut fed, partition)?
    } else {
        None
    };
    let client_side = analysing.elapsed();
    let mut runs = Vec::with_capacity(servers.len());
    for (k, ((recorder, rounds), mu)) in recorders.iter().zip(rounds).zip(&last_mu).enumerate() {
        let analysing = Instant::now();
        let analysed = match &client_outliers {
            Some(c) if recorder.cfg.analyses_training_images() => {
                alone[k] += client_side;
                Some(c.against_global(&mut fed, k, strategy, recorder.out)?)
            }
            _ => None,
        };
        let wall = (alone[k] + analysing.elapsed()).as_secs_f64();
        runs.push(recorder.finish(fed.global_model_of(k), rounds, mu, privacy.clone(), analysed, wall)?);
    }
    Ok(runs)
}

/// The file in a run's folder that keeps `strategy`'s last good global model.
pub(crate) fn checkpoint_file(strategy: StrategyKind) -> String {
    format!("{}-global.safetensors", strategy.as_str())
}

/// The seed of the latents whose decoded images score FID after `round` of a run seeded `seed`.
pub(crate) fn fid_seed(seed: u64, round: usize) -> u64 {
    derive_seed(seed, Stream::FidSamples, 0, round as u64)
}

/// What records a strategy's rounds and finishes its run, for the simulation and the deployed
/// server alike.
pub(crate) struct RoundRecorder<'a, B: TrainingOps + ImageOps> {
    pub(crate) cfg: &'a ExperimentConfig,
    pub(crate) eval: &'a Samples,
    pub(crate) fid: Option<&'a FidScorer<B>>,
    pub(crate) observer: &'a dyn Observer,
    pub(crate) out: &'a Path,
    pub(crate) strategy: StrategyKind,
}

impl<B: TrainingOps + ImageOps> RoundRecorder<'_, B> {
    /// Where the last good global model is kept.
    pub(crate) fn checkpoint(&self) -> std::path::PathBuf {
        self.out.join(checkpoint_file(self.strategy))
    }

    /// What a failed round leaves behind, after `completed` rounds.
    pub(crate) fn kept(&self, completed: usize) -> String {
        if completed == 0 {
            "no round completed, so no checkpoint was written".to_string()
        } else {
            format!("the last good global model (round {completed}) is kept at {}", self.checkpoint().display())
        }
    }

    /// Evaluates the global model after a round, keeps it as the checkpoint and scores FID when
    /// due; returns the round's record and the evaluation set's latent means.
    pub(crate) fn record(
        &self,
        global: &mut Vae<B>,
        outcome: &federation::RoundOutcome,
        started: Instant,
        left_out: Vec<report::LeftOut>,
    ) -> Result<(RoundRecord, Vec<f32>)> {
        let cfg = self.cfg;
        let e = evaluate(global, self.eval, cfg.seed)?;
        write_file(&self.checkpoint(), vae::encode_checkpoint(global.config(), &global.weights()))?;
        let fid = match self.fid.filter(|_| cfg.fid.scores_round(outcome.round, cfg.rounds)) {
            Some(scorer) => Some(scorer.score(global.decoder(), fid_seed(cfg.seed, outcome.round), self.observer)?),
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
            seconds: started.elapsed().as_secs_f64(),
            client_loss: outcome.client_losses.iter().map(|l| l.map(|l| l.total)).collect(),
            server_loss: outcome.server.train_loss.map(|l| l.total),
            synthetic_samples: outcome.server.synthetic_samples,
            fid,
            left_out,
        };
        metrics_log::append(self.out, self.strategy, &record)?;
        Ok((record, e.mu))
    }

    /// The strategy's run after its last round: figures of the global model, the outlier
    /// analysis if one was made, a warning if training collapsed.
    pub(crate) fn finish(
        &self,
        global: &mut Vae<B>,
        rounds: Vec<RoundRecord>,
        last_mu: &[f32],
        client_privacy: Vec<privacy::PrivacySpent>,
        analysed: Option<(OutlierReport, String)>,
        wall_seconds: f64,
    ) -> Result<StrategyRun> {
        let (cfg, strategy) = (self.cfg, self.strategy);
        let mut figures = write_figures(global, self.eval, last_mu, cfg.seed, strategy, self.out)?;
        let outliers = analysed.map(|(report, figure)| {
            figures.push(figure);
            report
        });
        let last = rounds.last().expect("at least one round");
        let warnings: Vec<String> = collapse_warning(strategy, last.accuracy, self.eval).into_iter().collect();
        warnings.iter().for_each(|w| self.observer.note(w));
        Ok(StrategyRun {
            strategy,
            final_metrics: FinalMetrics {
                accuracy: last.accuracy,
                f1: last.f1,
                lipschitz_decoder: last.lipschitz_decoder,
                lipschitz_spectral_bound: last.lipschitz_spectral_bound,
                lipschitz_pairwise: last.lipschitz_pairwise,
                fid: last.fid,
            },
            rounds,
            wall_seconds,
            checkpoint: self.checkpoint().display().to_string(),
            figures,
            client_privacy,
            outliers,
            warnings,
        })
    }
}

fn write_figures<B: TrainingOps + ImageOps>(
    global: &mut Vae<B>,
    eval: &Samples,
    mu: &[f32],
    seed: u64,
    strategy: StrategyKind,
    out: &Path,
) -> Result<Vec<String>> {
    let d = global.config().latent;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let z = LatentPrior::StandardNormal { dim: d }.sample(GRID_SAMPLES, &mut rng);
    let images = global.decoder().decode(&z);
    let grid = FigureKind::Samples.of_strategy(strategy);
    write_file(&out.join(&grid), metrics::sample_grid(&images, data::IMAGE_SIDE, 10)?)?;
    let points = metrics::project_2d(mu, d);
    let scatter = FigureKind::Latent.of_strategy(strategy);
    write_file(&out.join(&scatter), metrics::latent_scatter(&points, &eval.labels, 600)?)?;
    let vector = FigureKind::LatentVector.of_strategy(strategy);
    let title = format!("Latent means of the evaluation set, {} global model", strategy.as_str());
    let axes = if d <= 2 { ("z₁", "z₂") } else { ("principal component 1", "principal component 2") };
    write_file(&out.join(&vector), metrics::latent_scatter_svg(&points, &eval.labels, &title, axes)?)?;
    Ok(vec![grid, scatter, vector])
}

/// Runs the experiment on `backend` and writes everything into `out`; returns the report.
pub fn run_experiment<B: TrainingOps + ImageOps>(
    backend: &B,
    cfg: &ExperimentConfig,
    data_dir: &Path,
    out: &Path,
    observer: &dyn Observer,
) -> Result<Report> {
    check_before_work(cfg)?;
    let partition = load_partition(cfg, data_dir)?;
    let fid = Fid::prepare(backend, cfg, &partition, observer)?;
    run_prepared(backend, cfg, &Prepared { data_dir, partition: &partition, fid: &fid }, out, observer)
}

/// The checks that need no data: the configuration is valid and fits the machine's memory.
fn check_before_work(cfg: &ExperimentConfig) -> Result<()> {
    cfg.validate()?;
    match crate::available_memory() {
        Some(available) => cfg.check_memory(available),
        None => Ok(()),
    }
}

/// FID of a run's global decoder against its evaluation images, or why it is not computed.
pub enum Fid<B: TrainingOps + ImageOps> {
    /// Inception loaded, the evaluation images' statistics computed.
    Ready(FidScorer<B>),
    /// Not computed: disabled, the Inception weights were not found, or (deployed) a round that
    /// does not score FID.
    Skipped(String),
}

impl<B: TrainingOps + ImageOps> Fid<B> {
    /// The scorer for `partition`'s evaluation images, or why there is none: FID disabled, or
    /// the Inception weights missing (a note, not an error: the rest of the run does not need
    /// them). Damaged weights are an error.
    pub fn prepare(
        backend: &B,
        cfg: &ExperimentConfig,
        partition: &Partition,
        observer: &dyn Observer,
    ) -> Result<Self> {
        if !cfg.fid.enabled {
            return Ok(Fid::Skipped("disabled (fid.enabled = false or --no-fid)".into()));
        }
        let path = match metrics::locate_inception_weights(cfg.fid.weights.as_deref()) {
            Ok(path) => path,
            Err(e) => {
                observer.note(&format!("warning: FID skipped. {e}"));
                return Ok(Fid::Skipped(e.to_string()));
            }
        };
        let real = ImageSet::gray_squares(partition.eval.pixels.clone(), data::IMAGE_SIDE);
        let scorer = FidScorer::new(backend, &path, &real, cfg.fid.samples, cfg.fid.batch, observer)?;
        if let Some(w) = scorer.real_stats().small_set_warning("evaluation") {
            observer.note(&w);
        }
        Ok(Fid::Ready(scorer))
    }

    /// The scorer, if FID is computed.
    pub fn scorer(&self) -> Option<&FidScorer<B>> {
        match self {
            Fid::Ready(scorer) => Some(scorer),
            Fid::Skipped(_) => None,
        }
    }

    /// Why FID is not computed, if it is not.
    pub fn skipped_because(&self) -> Option<&str> {
        match self {
            Fid::Ready(_) => None,
            Fid::Skipped(reason) => Some(reason),
        }
    }
}

/// What an experiment needs besides its config, loaded once and shared by experiments on the
/// same data (as a reproduction does).
pub struct Prepared<'a, B: TrainingOps + ImageOps> {
    /// Where the data came from (for the report).
    pub data_dir: &'a Path,
    /// The partition the config asks for.
    pub partition: &'a Partition,
    /// FID of the partition's evaluation set.
    pub fid: &'a Fid<B>,
}

/// Runs the experiment on an already loaded partition and writes everything into `out`.
pub fn run_on_partition<B: TrainingOps + ImageOps>(
    backend: &B,
    cfg: &ExperimentConfig,
    prepared: &Prepared<'_, B>,
    out: &Path,
    observer: &dyn Observer,
) -> Result<Report> {
    check_before_work(cfg)?;
    run_prepared(backend, cfg, prepared, out, observer)
}

/// Runs experiments that differ only in their servers' settings (`[server]`, `[fid]`) on one set
/// of clients: the clients train once per round and every experiment's server aggregates their
/// updates, reaching what it would alone (ALIGN-FL's clients never receive a global model).
/// `runs` pairs each config with its output folder, written as [`run_on_partition`] writes it;
/// each run's wall time counts the shared clients' time as its own. Under DP-SGD the servers'
/// models are post-processing of the clients' one release, so every run's ε is the release's.
pub fn run_sharing_clients<B: TrainingOps + ImageOps>(
    backend: &B,
    runs: &[(ExperimentConfig, PathBuf)],
    prepared: &Prepared<'_, B>,
    observer: &dyn Observer,
) -> Result<Vec<Report>> {
    let Some((first, first_out)) = runs.first() else { return Ok(Vec::new()) };
    for (cfg, out) in runs {
        check_before_work(cfg)?;
        if !first.shares_clients_with(cfg) {
            return Err(PipelineError::Config(format!(
                "the experiment for {} cannot share clients with the one for {}: runs that share clients \
                 must be ALIGN-FL without baselines and differ only in [server] and [fid]",
                out.display(),
                first_out.display()
            )));
        }
    }
    for (_, out) in runs {
        create_dir(out)?;
        metrics_log::start(out)?;
    }
    let shared = Shared::new(backend, first, prepared, first_out, observer)?;
    let servers: Vec<(&ExperimentConfig, &Path)> = runs.iter().map(|(c, o)| (c, o.as_path())).collect();
    let main_runs = run_servers(&shared, first.strategy, &servers)?;
    runs.iter()
        .zip(main_runs)
        .map(|((cfg, out), main)| {
            // Without baselines the run's wall time is its strategy's.
            let wall = main.wall_seconds;
            write_report(backend, cfg, prepared, out, main, BTreeMap::new(), wall)
        })
        .collect()
}

/// [`run_on_partition`] after its checks.
fn run_prepared<B: TrainingOps + ImageOps>(
    backend: &B,
    cfg: &ExperimentConfig,
    prepared: &Prepared<'_, B>,
    out: &Path,
    observer: &dyn Observer,
) -> Result<Report> {
    let total = Instant::now();
    create_dir(out)?;
    metrics_log::start(out)?;
    let shared = Shared::new(backend, cfg, prepared, out, observer)?;
    let main = run_strategy(&shared, cfg.strategy)?;
    let mut baselines = BTreeMap::new();
    for &b in cfg.compare.iter().filter(|&&b| b != cfg.strategy) {
        baselines.insert(b, run_strategy(&shared, b)?);
    }
    write_report(backend, cfg, prepared, out, main, baselines, total.elapsed().as_secs_f64())
}

impl<'a, B: TrainingOps + ImageOps> Shared<'a, B> {
    /// What `cfg`'s strategies share on `prepared`'s partition, writing into `out`; notes an
    /// implausible DP-SGD noise.
    fn new(
        backend: &'a B,
        cfg: &'a ExperimentConfig,
        prepared: &Prepared<'a, B>,
        out: &'a Path,
        observer: &'a dyn Observer,
    ) -> Result<Self> {
        let partition = prepared.partition;
        observer.note(&format!(
            "align-fl: {} clients ({} samples, {} outliers at client 0), evaluation set of {} images from {}",
            partition.clients.len(),
            partition.clients.iter().map(|c| c.samples.len()).sum::<usize>(),
            partition.clients[0].outliers,
            partition.eval.len(),
            prepared.data_dir.display()
        ));
        let shared = Shared {
            backend,
            cfg,
            partition,
            out,
            // Every strategy's clients share the calibrated noise: compute it once.
            sigmas: calibrate_clients(cfg, partition.clients.iter().map(|c| c.samples.len()))?,
            fid: prepared.fid.scorer(),
            observer,
        };
        for &sigma in shared.sigmas.values() {
            if let Some(warning) = privacy::implausible_noise(sigma, cfg.privacy.epsilon, cfg.privacy.delta) {
                observer.note(&warning);
            }
        }
        Ok(shared)
    }
}

/// Writes the report of `cfg`'s run into `out` and returns it.
fn write_report<B: TrainingOps + ImageOps>(
    backend: &B,
    cfg: &ExperimentConfig,
    prepared: &Prepared<'_, B>,
    out: &Path,
    main: StrategyRun,
    baselines: BTreeMap<StrategyKind, StrategyRun>,
    total_wall_seconds: f64,
) -> Result<Report> {
    let report = Report {
        config: cfg.clone(),
        backend: backend.name().to_string(),
        threads: rayon::current_num_threads(),
        data_dir: prepared.data_dir.display().to_string(),
        privacy: privacy_report(cfg, &main, &baselines, cfg.analyses_training_images())?,
        main,
        baselines,
        total_wall_seconds,
        fid_note: prepared.fid.skipped_because().map(str::to_owned),
    };
    report::write(out, &report)?;
    Ok(report)
}

/// The report's `privacy` object: None without a mechanism. Under DP-SGD every strategy's
/// clients train on the same private data, so each client's release is composed over the main
/// strategy and the baselines; `training_images_shown` says whether the run showed some of them.
pub(crate) fn privacy_report(
    cfg: &ExperimentConfig,
    main: &StrategyRun,
    baselines: &BTreeMap<StrategyKind, StrategyRun>,
    training_images_shown: bool,
) -> Result<Option<PrivacyReport>> {
    let dp = &cfg.privacy;
    let prior = cfg.prior().kind;
    Ok(match dp.mechanism {
        Mechanism::None => None,
        Mechanism::DpSgd => {
            let runs: Vec<&StrategyRun> = std::iter::once(main).chain(baselines.values()).collect();
            let release = (0..main.client_privacy.len())
                .map(|k| {
                    let parts: Vec<privacy::PrivacySpent> = runs.iter().map(|r| r.client_privacy[k].clone()).collect();
                    privacy::ComposedPrivacy::of(&parts)
                        .map_err(|e| PipelineError::from(e).within(format!("composing client {k}'s release")))
                })
                .collect::<Result<Vec<_>>>()?;
            Some(PrivacyReport::DpSgd {
                target_epsilon: dp.epsilon,
                delta: dp.delta,
                dp_scope: dp.scope,
                prior,
                guarantee_holds: release.iter().all(|c| c.guarantee_holds) && !training_images_shown,
                release,
                clients: main.client_privacy.clone(),
                training_images_shown,
            })
        }
        Mechanism::Lipschitz => {
            Some(PrivacyReport::Lipschitz { lambda_lip: dp.lambda_lip, lipschitz_at: dp.lipschitz_at, prior })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_near_chance_is_called_collapsed() {
        let labels: Vec<u8> = (0..100u8).map(|i| i % 10).collect();
        let eval = Samples { pixels: vec![0.0; 100 * data::IMAGE_PIXELS], labels };
        let w = collapse_warning(StrategyKind::AlignFl, 0.12, &eval).expect("12 % on ten balanced classes");
        assert!(w.contains("align-fl's global model collapsed") && w.contains("0.1000"), "{w}");
        assert!(collapse_warning(StrategyKind::AlignFl, 0.54, &eval).is_none());
    }
}
