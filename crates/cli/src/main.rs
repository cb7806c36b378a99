//! `align-fl`: the command-line front end. `run` executes an experiment from a TOML config with
//! flag overrides; `data` fetches, verifies and subsets the datasets; `privacy` does DP
//! accounting; `fid` computes FID between two image sets.

mod backend;
mod config;
mod fid;
mod progress;
mod report;
mod reproduce;
mod run;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use backend::{dispatch, BackendName, OnBackend};
use clap::{Args, Parser, Subcommand};
use tensor_kernels::Backend;

use config::{
    AccountantName, ClippingName, DatasetName, ExperimentConfig, MechanismName, NoiseName, SamplingName, StrategyName,
};

#[derive(Parser)]
#[command(
    name = "align-fl",
    version,
    about = "Federated learning across disjoint clients with shared decoders (ALIGN-FL)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an experiment: local VAEs, decoder uploads, a global VAE, a report.
    Run(Box<RunArgs>),
    /// Fetch, verify or subset the datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Privacy accounting: ε of a DP-SGD schedule, or the σ that reaches a target ε.
    #[command(subcommand)]
    Privacy(PrivacyCommand),
    /// FID between two image sets (IDX files or PNG folders), or `fid weights verify`.
    Fid(FidArgs),
    /// The paper's comparison table, privacy–utility curves and figures, over several seeds.
    Reproduce(ReproduceArgs),
}

#[derive(Args)]
struct ReproduceArgs {
    /// Primary dataset (the other one supplies client 0's outliers).
    #[arg(long, value_enum, default_value = "mnist")]
    dataset: DatasetName,
    /// Seeds per table row (the curves use seed 0).
    #[arg(long)]
    seeds: Option<u64>,
    /// Output directory: table.md, table.json, figures/, and cells/ (one run per experiment;
    /// finished ones are reused when the command is run again).
    #[arg(long, default_value = "runs/reproduce")]
    out: PathBuf,
    /// The committed subset and the quick preset (configs/quick.toml), one seed by default:
    /// minutes instead of hours.
    #[arg(long)]
    quick: bool,
    /// Start every experiment from this protocol (TOML, as `align-fl run --config`) instead of
    /// the paper's or the quick preset; the rows and curves change only what they vary.
    #[arg(long, conflicts_with = "quick")]
    config: Option<PathBuf>,
    /// Only these experiments, comma-separated: align-fl, dp-rdp, dp-pld, dp-decoder, lcd, fedavg,
    /// fedprox, heterogeneous (table rows); epsilon, lambda, samples (curves).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Skip FID.
    #[arg(long)]
    no_fid: bool,
    /// Rounds of every experiment (default: the protocol's 5).
    #[arg(long)]
    rounds: Option<usize>,
    /// Data directory (default: data/subset under --quick, else $ALIGN_FL_DATA, then ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Inception weights file (default: $ALIGN_FL_MODELS, then ./models).
    #[arg(long)]
    inception_weights: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Numeric backend.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendName,
}

impl OnBackend for reproduce::Settings {
    type Output = ();

    fn run<B: Backend>(self, backend: &B) -> Result<()> {
        reproduce::reproduce(backend, &self)
    }
}

fn reproduce_command(a: ReproduceArgs) -> Result<()> {
    set_threads(a.threads)?;
    let settings = reproduce::Settings {
        dataset: a.dataset,
        seeds: a.seeds.unwrap_or(if a.quick { 1 } else { 3 }),
        out: a.out,
        quick: a.quick,
        config: a.config,
        only: a.only,
        fid: !a.no_fid,
        rounds: a.rounds,
        data_dir: a.data_dir,
        inception_weights: a.inception_weights,
    };
    dispatch(a.backend, settings)
}

/// `--threads`: the global rayon pool's size.
fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            bail!("--threads 0: give at least 1");
        }
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().context("setting up the thread pool")?;
    }
    Ok(())
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct FidArgs {
    #[command(subcommand)]
    action: Option<FidAction>,
    /// Real images: an IDX image file (.gz or raw) or a folder of PNGs.
    #[arg(long)]
    real: Option<PathBuf>,
    /// Generated images: an IDX image file (.gz or raw) or a folder of PNGs.
    #[arg(long)]
    fake: Option<PathBuf>,
    /// Print JSON: {"fid", "n_real", "n_fake"}.
    #[arg(long)]
    json: bool,
    /// Images per Inception batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Inception weights file (default: $ALIGN_FL_MODELS, then ./models).
    #[arg(long)]
    inception_weights: Option<PathBuf>,
    /// Also write both sets' feature mean and covariance (f64 safetensors: real_mu, real_sigma,
    /// fake_mu, fake_sigma) to this file.
    #[arg(long)]
    save_stats: Option<PathBuf>,
    /// Numeric backend for the Inception features.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendName,
}

#[derive(Subcommand)]
enum FidAction {
    /// The Inception weights.
    #[command(subcommand)]
    Weights(WeightsAction),
}

#[derive(Subcommand)]
enum WeightsAction {
    /// Check the weights file's SHA-256 and every tensor's name and shape.
    Verify {
        /// Inception weights file (default: $ALIGN_FL_MODELS, then ./models).
        #[arg(long)]
        inception_weights: Option<PathBuf>,
    },
}

fn fid_command(args: FidArgs) -> Result<()> {
    dispatch(args.backend, args)
}

impl OnBackend for FidArgs {
    type Output = ();

    fn run<B: Backend>(self, backend: &B) -> Result<()> {
        fid_on(backend, self)
    }
}

fn fid_on<B: Backend>(backend: &B, args: FidArgs) -> Result<()> {
    if let Some(FidAction::Weights(WeightsAction::Verify { inception_weights })) = args.action {
        let path = fid::verify_weights(backend, inception_weights.as_deref())?;
        println!("ok  {} (sha256 {}, 94 convolutions)", path.display(), metrics::INCEPTION_SHA256);
        return Ok(());
    }
    let (Some(real), Some(fake)) = (&args.real, &args.fake) else {
        bail!("align-fl fid needs --real A and --fake B (IDX image files or folders of PNGs)");
    };
    if args.batch == 0 {
        bail!("--batch 0: give at least 1 image per batch");
    }
    let (real_set, fake_set) = (fid::read_image_set(real)?, fid::read_image_set(fake)?);
    for (what, set) in [("--real", &real_set), ("--fake", &fake_set)] {
        if set.shape.n < 2 {
            bail!("{what} holds {} image(s); FID needs at least 2 per set", set.shape.n);
        }
    }
    let path = metrics::locate_inception_weights(args.inception_weights.as_deref())?;
    let model = metrics::Inception::load(backend, &path)?;
    let real_stats = fid::feature_stats(&model, &real_set, args.batch, "real")?;
    let fake_stats = fid::feature_stats(&model, &fake_set, args.batch, "fake")?;
    for (what, stats) in [("real", &real_stats), ("fake", &fake_stats)] {
        if let Some(w) = fid::small_set_warning(what, stats) {
            eprintln!("{w}");
        }
    }
    let value = metrics::frechet_distance(&real_stats, &fake_stats)?;
    if let Some(path) = &args.save_stats {
        metrics::save_feature_stats(path, &[("real", &real_stats), ("fake", &fake_stats)])?;
        eprintln!("statistics written to {}", path.display());
    }
    if args.json {
        println!("{}", serde_json::json!({"fid": value, "n_real": real_stats.n, "n_fake": fake_stats.n}));
    } else {
        println!("FID {value:.4} ({} real, {} fake images)", real_stats.n, fake_stats.n);
    }
    Ok(())
}

#[derive(Subcommand)]
enum PrivacyCommand {
    /// ε of `steps` Poisson-sampled Gaussian steps at rate q and noise multiplier σ.
    Epsilon {
        /// q ∈ (0, 1].
        #[arg(long)]
        sampling_rate: f64,
        /// σ > 0.
        #[arg(long)]
        noise_multiplier: f64,
        /// Number of steps.
        #[arg(long)]
        steps: u64,
        /// δ ∈ (0, 1).
        #[arg(long)]
        delta: f64,
        /// Accountant.
        #[arg(long, value_enum, default_value = "rdp")]
        accountant: AccountantName,
        /// Print JSON: {"epsilon", "order", "accountant"}.
        #[arg(long)]
        json: bool,
    },
    /// The smallest σ whose ε after `steps` steps at rate q is at most the target.
    Calibrate {
        /// Target ε.
        #[arg(long)]
        target_epsilon: f64,
        /// δ ∈ (0, 1).
        #[arg(long)]
        delta: f64,
        /// q ∈ (0, 1].
        #[arg(long)]
        sampling_rate: f64,
        /// Number of steps.
        #[arg(long)]
        steps: u64,
        /// Accountant.
        #[arg(long, value_enum, default_value = "rdp")]
        accountant: AccountantName,
        /// Print JSON: {"noise_multiplier", "epsilon"}.
        #[arg(long)]
        json: bool,
    },
}

fn privacy_command(cmd: PrivacyCommand) -> Result<()> {
    use privacy::{Accountant, DpEvent};
    match cmd {
        PrivacyCommand::Epsilon { sampling_rate, noise_multiplier, steps, delta, accountant, json } => {
            let kind = accountant.kind();
            let mut acc = kind.make();
            acc.compose(DpEvent::PoissonSampledGaussian { sampling_rate, noise_multiplier, steps })?;
            let eps = acc.epsilon(delta)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"epsilon": eps.epsilon, "order": eps.order, "accountant": kind.name()})
                );
            } else {
                let order = eps.order.map(|o| format!(" (Rényi order {o})")).unwrap_or_default();
                println!("ε = {:.6} at δ = {delta:e}{order}, {} accountant", eps.epsilon, kind.name());
            }
            Ok(())
        }
        PrivacyCommand::Calibrate { target_epsilon, delta, sampling_rate, steps, accountant, json } => {
            let kind = accountant.kind();
            let (sigma, eps) = privacy::calibrate_noise_multiplier(kind, target_epsilon, delta, sampling_rate, steps)?;
            if json {
                println!("{}", serde_json::json!({"noise_multiplier": sigma, "epsilon": eps}));
            } else {
                println!("σ = {sigma:.6} gives ε = {eps:.6} at δ = {delta:e} ({} accountant)", kind.name());
            }
            Ok(())
        }
    }
}

#[derive(Args)]
struct RunArgs {
    /// Experiment config (TOML); without one, the paper protocol's defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Main strategy.
    #[arg(long, value_enum)]
    strategy: Option<StrategyName>,
    /// Baselines to compare against, comma-separated, or "none".
    #[arg(long, value_delimiter = ',')]
    compare: Option<Vec<String>>,
    /// Federated rounds.
    #[arg(long)]
    rounds: Option<usize>,
    /// Number of clients (the first N class pairs).
    #[arg(long)]
    clients: Option<usize>,
    /// Primary dataset.
    #[arg(long, value_enum)]
    dataset: Option<DatasetName>,
    /// Data directory (default: config's data_dir, then $ALIGN_FL_DATA, then ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output directory for report.json, report.md, figures and checkpoints.
    #[arg(long, default_value = "runs/latest")]
    out: PathBuf,
    /// Seed of every random stream.
    #[arg(long)]
    seed: Option<u64>,
    /// Local epochs per round.
    #[arg(long)]
    local_epochs: Option<usize>,
    /// Synthetic samples per client per round (ALIGN-FL server).
    #[arg(long)]
    synthetic_samples: Option<usize>,
    /// Server epochs per round (ALIGN-FL).
    #[arg(long)]
    server_epochs: Option<usize>,
    /// β (λ_KL) of ALIGN-FL clients and server.
    #[arg(long)]
    lambda_kl: Option<f32>,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Numeric backend.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendName,
    /// Privacy mechanism of the clients.
    #[arg(long, value_enum)]
    privacy: Option<MechanismName>,
    /// DP-SGD: target ε per client over the whole run.
    #[arg(long)]
    epsilon: Option<f64>,
    /// DP-SGD: δ.
    #[arg(long)]
    delta: Option<f64>,
    /// DP-SGD: accountant.
    #[arg(long, value_enum)]
    accountant: Option<AccountantName>,
    /// DP-SGD: clipping rule.
    #[arg(long, value_enum)]
    clipping: Option<ClippingName>,
    /// DP-SGD: clipping threshold C (the initial one under adaptive clipping).
    #[arg(long)]
    max_grad_norm: Option<f64>,
    /// DP-SGD: batch sampling (shuffled is not covered by the accountant).
    #[arg(long, value_enum)]
    sampling: Option<SamplingName>,
    /// DP-SGD: noise randomness (reproducible noise is not covered by the guarantee).
    #[arg(long, value_enum)]
    noise: Option<NoiseName>,
    /// DP-SGD: let clients fit the GMM prior on private latents (voids the guarantee).
    #[arg(long)]
    allow_non_private_prior: bool,
    /// DP-SGD: clip and noise the whole VAE (the paper's) or the decoder only (the authors' dec_dp
    /// ablation, not covered by the guarantee).
    #[arg(long, value_enum)]
    dp_scope: Option<DpScopeName>,
    /// LCD-VAE: weight λ_lip of the gradient penalty.
    #[arg(long)]
    lambda_lip: Option<f32>,
    /// LCD-VAE: put the penalty on the decoder (the paper's) or on the encoder (the authors'
    /// code's alternative).
    #[arg(long, value_enum)]
    lipschitz_at: Option<LipschitzAt>,
    /// Skip FID (it needs the Inception weights and dominates a CPU run's time).
    #[arg(long)]
    no_fid: bool,
    /// Images decoded from N(0, I) per FID (default 2000).
    #[arg(long)]
    fid_samples: Option<usize>,
    /// Also compute FID every K rounds (default: final round only).
    #[arg(long)]
    fid_every: Option<usize>,
    /// Inception weights file (default: $ALIGN_FL_MODELS, then ./models).
    #[arg(long)]
    inception_weights: Option<PathBuf>,
}

/// `--dp-scope`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum DpScopeName {
    /// Every layer of the VAE.
    WholeModel,
    /// The decoder only; the encoder trains without clipping or noise.
    DecoderOnly,
}

/// `--lipschitz-at`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LipschitzAt {
    /// Decoder at interpolated latents (LCD-VAE as in the paper).
    Decoder,
    /// Encoder's (μ, log σ²) head at interpolated inputs.
    Encoder,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Put the dataset files into the data directory (download, or copy with --from).
    Fetch {
        /// Which dataset; both when omitted.
        #[arg(long, value_enum)]
        dataset: Option<DatasetName>,
        /// Data directory (default: $ALIGN_FL_DATA, then ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Copy from this local directory instead of downloading
        /// (e.g. /usr/share/datasets/fashion-mnist).
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// Check presence, SHA-256 and IDX headers of every dataset file.
    Verify {
        /// Data directory (default: $ALIGN_FL_DATA, then ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Write the small committed subset (first N images per class) from a full data directory.
    Subset {
        /// Full data directory to read.
        #[arg(long)]
        from: PathBuf,
        /// Where to write the subset.
        #[arg(long, default_value = "data/subset")]
        out: PathBuf,
        /// Training images per class.
        #[arg(long, default_value_t = 300)]
        train_per_class: usize,
        /// Test images per class.
        #[arg(long, default_value_t = 100)]
        test_per_class: usize,
    },
}

fn apply_overrides(cfg: &mut ExperimentConfig, a: &RunArgs) -> Result<()> {
    if let Some(v) = a.strategy {
        cfg.strategy = v;
    }
    if let Some(list) = &a.compare {
        cfg.compare = Vec::new();
        for name in list.iter().filter(|n| n.as_str() != "none") {
            match <StrategyName as clap::ValueEnum>::from_str(name, true) {
                Ok(s) => cfg.compare.push(s),
                Err(_) => bail!("--compare: unknown strategy {name:?}; use align-fl, fedavg, fedprox or none"),
            }
        }
    }
    macro_rules! set {
        ($flag:expr => $field:expr) => {
            if let Some(v) = $flag {
                $field = v;
            }
        };
    }
    set!(a.rounds => cfg.rounds);
    set!(a.clients => cfg.partition.clients);
    set!(a.dataset => cfg.dataset);
    set!(a.seed => cfg.seed);
    set!(a.local_epochs => cfg.client.local_epochs);
    set!(a.synthetic_samples => cfg.server.synthetic_samples);
    set!(a.server_epochs => cfg.server.server_epochs);
    set!(a.privacy => cfg.privacy.mechanism);
    set!(a.epsilon => cfg.privacy.epsilon);
    set!(a.delta => cfg.privacy.delta);
    set!(a.accountant => cfg.privacy.accountant);
    set!(a.clipping => cfg.privacy.clipping);
    set!(a.max_grad_norm => cfg.privacy.max_grad_norm);
    set!(a.sampling => cfg.privacy.sampling);
    set!(a.noise => cfg.privacy.noise);
    cfg.privacy.allow_non_private_prior |= a.allow_non_private_prior;
    set!(a.lambda_lip => cfg.privacy.lambda_lip);
    if let Some(scope) = a.dp_scope {
        cfg.privacy.scope = match scope {
            DpScopeName::WholeModel => privacy::DpScope::WholeModel,
            DpScopeName::DecoderOnly => privacy::DpScope::DecoderOnly,
        };
    }
    if let Some(at) = a.lipschitz_at {
        cfg.privacy.lipschitz_at = match at {
            LipschitzAt::Decoder => vae::PenaltyTarget::Decoder,
            LipschitzAt::Encoder => vae::PenaltyTarget::Encoder,
        };
    }
    cfg.fid.enabled &= !a.no_fid;
    set!(a.fid_samples => cfg.fid.samples);
    set!(a.fid_every => cfg.fid.every);
    if let Some(w) = &a.inception_weights {
        cfg.fid.weights = Some(w.clone());
    }
    if let Some(v) = a.lambda_kl {
        cfg.client.lambda_kl = v;
        cfg.server.lambda_kl = v;
    }
    Ok(())
}

fn run(args: RunArgs) -> Result<()> {
    let mut cfg = match &args.config {
        Some(path) => ExperimentConfig::load(path)?,
        None => ExperimentConfig::default(),
    };
    apply_overrides(&mut cfg, &args)?;
    set_threads(args.threads)?;
    let data_dir = run::data_dir(args.data_dir.as_deref(), &cfg);
    let report = dispatch(args.backend, RunJob { cfg: &cfg, data_dir: &data_dir, out: &args.out })?;
    let fid = |v: Option<f64>| v.map_or(String::new(), |f| format!(", FID {f:.2}"));
    println!(
        "{}: final accuracy {:.4}, F1 {:.4}, decoder Lipschitz {:.3}{} ({:.1} s)",
        report.strategy,
        report.final_metrics.accuracy,
        report.final_metrics.f1,
        report.final_metrics.lipschitz_decoder,
        fid(report.final_metrics.fid),
        report.wall_seconds
    );
    for (name, b) in &report.baselines {
        println!(
            "{name}: final accuracy {:.4}, F1 {:.4}, decoder Lipschitz {:.3}{} ({:.1} s)",
            b.final_metrics.accuracy,
            b.final_metrics.f1,
            b.final_metrics.lipschitz_decoder,
            fid(b.final_metrics.fid),
            b.wall_seconds
        );
    }
    if let Some(note) = &report.fid_note {
        println!("FID not computed: {note}");
    }
    println!("report: {}", args.out.join("report.md").display());
    Ok(())
}

/// One experiment, ready to run on a backend.
struct RunJob<'a> {
    cfg: &'a ExperimentConfig,
    data_dir: &'a std::path::Path,
    out: &'a std::path::Path,
}

impl OnBackend for RunJob<'_> {
    type Output = report::Report;

    fn run<B: Backend>(self, backend: &B) -> Result<report::Report> {
        run::run_experiment(backend, self.cfg, self.data_dir, self.out)
    }
}

fn data_command(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Fetch { dataset, data_dir, from } => {
            let dir = data::resolve_data_dir(data_dir.as_deref());
            let kinds = dataset.map_or(data::DatasetKind::ALL.to_vec(), |d| vec![d.kind()]);
            for kind in kinds {
                eprintln!("fetching {} into {}", kind.display_name(), dir.join(kind.dir_name()).display());
                for path in data::fetch(&dir, kind, from.as_deref())? {
                    println!("ok  {}", path.display());
                }
            }
            Ok(())
        }
        DataCommand::Verify { data_dir } => {
            let dir = data::resolve_data_dir(data_dir.as_deref());
            let mut failed = 0;
            for kind in data::DatasetKind::ALL {
                for check in data::verify(&dir, kind) {
                    match check.result {
                        Ok(path) => println!("ok      {}", path.display()),
                        Err(e) => {
                            failed += 1;
                            println!("FAILED  {}: {e}", check.name);
                        }
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} file(s) in {} failed verification", dir.display());
            }
            Ok(())
        }
        DataCommand::Subset { from, out, train_per_class, test_per_class } => {
            let sizes = data::SubsetSizes { train_per_class, test_per_class };
            for path in data::make_subset(&from, &out, sizes)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(*args),
        Command::Data(cmd) => data_command(cmd),
        Command::Privacy(cmd) => privacy_command(cmd),
        Command::Fid(args) => fid_command(args),
        Command::Reproduce(args) => reproduce_command(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
