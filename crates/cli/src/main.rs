//! `align-fl`: the command line over the `pipeline` library. `run` executes an experiment from a
//! TOML config with flag overrides; `reproduce` makes the paper's table; `data` fetches,
//! verifies and subsets the datasets; `privacy` does DP accounting; `fid` computes FID between
//! two image sets.

mod backend;
mod deploy;
mod models;
mod progress;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use backend::{dispatch, BackendName, OnBackend};
use clap::{Args, Parser, Subcommand};
use data::{DatasetKind, ImageSet};
use pipeline::reproduce::Experiment;
use pipeline::{ExperimentConfig, OutDir, Overrides};
use privacy::AccountantKind;
use progress::Terminal;
use tensor_kernels::{ImageOps, TrainingOps};

#[derive(Parser)]
#[command(
    name = "align-fl",
    version,
    about = "Federated learning across disjoint clients with shared decoders (ALIGN-FL)",
    after_help = "Examples:\n  align-fl run --config configs/quick.toml            # the quick experiment, offline\n  align-fl reproduce --quick                           # the paper's table on the committed subset\n  align-fl privacy calibrate --target-epsilon 10 --delta 1e-5 --sampling-rate 0.02 --steps 2500"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an experiment: local VAEs, decoder uploads, a global VAE, a report.
    #[command(
        after_help = "Examples:\n  align-fl run --config configs/quick.toml\n  align-fl run --config configs/paper-mnist.toml --privacy dp-sgd --epsilon 10 --out runs/dp10"
    )]
    Run(Box<RunArgs>),
    /// Fetch, verify or subset the datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Privacy accounting: ε of a DP-SGD schedule, or the σ that reaches a target ε.
    #[command(subcommand)]
    Privacy(PrivacyCommand),
    /// The FID Inception weights: fetch pytorch-fid's release and convert it.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// FID between two image sets (IDX files or PNG folders), of a finished run (`--run`), or
    /// `fid weights verify`.
    #[command(
        after_help = "Examples:\n  align-fl fid --real data/real-pngs --fake runs/latest/samples --json\n  align-fl fid --run runs/latest                # add FID to a run made with --no-fid\n  align-fl fid weights verify"
    )]
    Fid(FidArgs),
    /// The paper's comparison table, privacy–utility curves and figures, over several seeds.
    #[command(
        after_help = "Examples:\n  align-fl reproduce --quick\n  align-fl reproduce --dataset mnist --seeds 3 --out runs/reproduce\n  align-fl reproduce --plan runs/sweep && align-fl reproduce --collect runs/sweep"
    )]
    Reproduce(ReproduceArgs),
    /// A client's side of a run across machines (one round per call; docs/deployment.md).
    #[command(subcommand)]
    Client(deploy::ClientCommand),
    /// The server's side of a run across machines (one round per call; docs/deployment.md).
    #[command(subcommand)]
    Server(deploy::ServerCommand),
}

/// Options every training command shares.
#[derive(Args)]
pub(crate) struct Machine {
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Numeric backend.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendName,
}

impl Machine {
    /// Sizes the global rayon pool (`--threads`).
    pub(crate) fn set_threads(&self) -> Result<()> {
        if let Some(n) = self.threads {
            if n == 0 {
                bail!("--threads 0: give at least 1");
            }
            rayon::ThreadPoolBuilder::new().num_threads(n).build_global().context("setting up the thread pool")?;
        }
        Ok(())
    }
}

#[derive(Args)]
struct RunArgs {
    /// Experiment config (TOML); without one, the paper protocol's defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (default: config's data_dir, then $ALIGN_FL_DATA, then ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output directory for report.json, report.md, figures and checkpoints [default: a new
    /// folder runs/YYYY-MM-DD_HH-MM-SS (UTC), with runs/latest pointing to it].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace the run files an existing --out holds (without it, such an --out is refused).
    #[arg(long, requires = "out")]
    overwrite: bool,
    #[command(flatten)]
    machine: Machine,
    #[command(flatten)]
    overrides: Overrides,
}

/// One experiment, ready to run on a backend.
struct RunJob {
    cfg: ExperimentConfig,
    data_dir: PathBuf,
    out: PathBuf,
}

impl OnBackend for RunJob {
    type Output = pipeline::Report;

    fn run<B: TrainingOps + ImageOps>(self, backend: &B) -> Result<pipeline::Report> {
        Ok(pipeline::run_experiment(backend, &self.cfg, &self.data_dir, &self.out, &Terminal::default())?)
    }
}

fn run_command(a: RunArgs) -> Result<()> {
    let mut cfg = match &a.config {
        Some(path) => ExperimentConfig::load(path)?,
        None => ExperimentConfig::default(),
    };
    a.overrides.apply(&mut cfg)?;
    cfg.validate()?;
    a.machine.set_threads()?;
    let out = match a.out {
        Some(path) => OutDir::Given { path, overwrite: a.overwrite },
        None => OutDir::Fresh { parent: PathBuf::from("runs") },
    }
    .prepare()?;
    let job = RunJob { data_dir: cfg.data_dir(a.data_dir.as_deref()), cfg, out: out.clone() };
    let report = dispatch(a.machine.backend, job)?;
    for run in std::iter::once(&report.main).chain(report.baselines.values()) {
        let f = &run.final_metrics;
        println!(
            "{}: final accuracy {:.4}, F1 {:.4}, decoder Lipschitz {:.3}{} ({:.1} s)",
            run.strategy.as_str(),
            f.accuracy,
            f.f1,
            f.lipschitz_decoder,
            f.fid.map_or(String::new(), |v| format!(", FID {v:.2}")),
            run.wall_seconds
        );
    }
    if let Some(note) = &report.fid_note {
        println!("FID not computed: {note}");
    }
    println!("report: {}", out.join("report.md").display());
    Ok(())
}

#[derive(Args)]
struct ReproduceArgs {
    /// Primary dataset (the other one supplies client 0's outliers).
    #[arg(long, value_enum, default_value = "mnist")]
    dataset: DatasetKind,
    /// Seeds per row and curve point, from --first-seed on [default: 3; 1 with --quick].
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed: `--first-seed 3 --seeds 3` runs seeds 3, 4 and 5 (to report settings chosen
    /// on seeds 0–2 on seeds they were not chosen on).
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Output directory: table.md, table.json, figures/, and cells/ (one run per experiment;
    /// finished ones are reused when the command is run again).
    #[arg(long, default_value = "runs/reproduce", conflicts_with_all = ["plan", "collect"])]
    out: PathBuf,
    /// For a cluster: write DIR/plan.txt, one self-contained command per unfinished experiment
    /// (each runs one --cell into DIR), and run nothing.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["collect", "cell"])]
    plan: Option<PathBuf>,
    /// Write the table and figures into DIR from the experiments finished there, naming the rest.
    #[arg(long, value_name = "DIR", conflicts_with = "cell")]
    collect: Option<PathBuf>,
    /// Run only this experiment, KEY/SEED as in cells/KEY/seed-SEED (what plan.txt's lines do).
    #[arg(long, value_name = "KEY/SEED", value_parser = parse_cell)]
    cell: Option<(String, u64)>,
    /// The committed subset and the quick preset (configs/quick.toml), one seed by default:
    /// minutes instead of hours.
    #[arg(long)]
    quick: bool,
    /// Start every experiment from this protocol (TOML, as `align-fl run --config`) instead of
    /// the paper's or the quick preset; the rows and curves change only what they vary.
    #[arg(long, conflicts_with = "quick")]
    config: Option<PathBuf>,
    /// Only these experiments, comma-separated: align-fl, dp-rdp, dp-pld, dp-decoder, lcd, fedavg,
    /// fedprox, heterogeneous (table rows); epsilon, epsilon-pld, lambda, samples, latent,
    /// latent-dp, server-latent, server-latent-dp, server-epochs, rounds (curves). The table
    /// also keeps the others already finished in --out.
    #[arg(long, value_delimiter = ',', value_parser = <Experiment as std::str::FromStr>::from_str)]
    only: Option<Vec<Experiment>>,
    /// Skip FID: cells finished with FID keep it, and a later run without --no-fid adds FID to
    /// the cells finished without it, from their saved models.
    #[arg(long)]
    no_fid: bool,
    /// Rounds of every experiment (default: the protocol's 5) but the `rounds` curve's 20-round runs.
    #[arg(long)]
    rounds: Option<usize>,
    /// Data directory (default: data/subset under --quick, else $ALIGN_FL_DATA, then ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Inception weights file (default: $ALIGN_FL_MODELS, then ./models).
    #[arg(long)]
    inception_weights: Option<PathBuf>,
    #[command(flatten)]
    machine: Machine,
}

impl OnBackend for pipeline::reproduce::Settings {
    type Output = ();

    fn run<B: TrainingOps + ImageOps>(self, backend: &B) -> Result<()> {
        use pipeline::reproduce::Action;
        let result = pipeline::reproduce::reproduce(backend, &self, &Terminal::default());
        let written = match self.action {
            Action::Plan => Some(("plan", self.out.join("plan.txt"))),
            Action::RunAll | Action::Collect => Some(("table", self.out.join("table.md"))),
            Action::Cell { .. } => None,
        };
        if let Some((what, path)) = written.filter(|(_, path)| path.is_file()) {
            println!("{what}: {}", path.display());
        }
        Ok(result?)
    }
}

/// `KEY/SEED` of `--cell`.
fn parse_cell(s: &str) -> Result<(String, u64), String> {
    let (key, seed) = s.rsplit_once('/').ok_or_else(|| format!("--cell {s}: expected KEY/SEED, e.g. dp-rdp/0"))?;
    let seed = seed.parse().map_err(|_| format!("--cell {s}: the seed {seed:?} is not a whole number"))?;
    Ok((key.to_string(), seed))
}

fn reproduce_command(a: ReproduceArgs) -> Result<()> {
    use pipeline::reproduce::Action;
    a.machine.set_threads()?;
    let (action, out) = match (a.plan, a.collect, a.cell) {
        (Some(dir), _, _) => (Action::Plan, dir),
        (_, Some(dir), _) => (Action::Collect, dir),
        (_, _, Some((key, seed))) => (Action::Cell { key, seed }, a.out),
        (None, None, None) => (Action::RunAll, a.out),
    };
    let seeds = a.seeds.unwrap_or(if a.quick { 1 } else { 3 });
    let Some(last_seed) = a.first_seed.checked_add(seeds) else {
        bail!("--first-seed {} --seeds {seeds}: every seed must be below {}; start lower", a.first_seed, u64::MAX)
    };
    let settings = pipeline::reproduce::Settings {
        action,
        dataset: a.dataset,
        seeds: a.first_seed..last_seed,
        quick: a.quick,
        config: a.config,
        only: a.only,
        fid: !a.no_fid,
        rounds: a.rounds,
        data_dir: a.data_dir,
        inception_weights: a.inception_weights,
        ..pipeline::reproduce::Settings::new(out)
    };
    dispatch(a.machine.backend, settings)
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct FidArgs {
    #[command(subcommand)]
    action: Option<FidAction>,
    /// A finished run's folder without FID (`align-fl run --no-fid`, or run before the Inception
    /// weights were in place): score the FID of the global models it saved, with the samples and
    /// the Inception batch the run would have used, and add it to its report.
    #[arg(long, conflicts_with_all = ["real", "fake", "save_stats", "batch"])]
    run: Option<PathBuf>,
    /// With --run: the data folder of the run's evaluation images (default: the one its report
    /// names).
    #[arg(long, requires = "run")]
    data_dir: Option<PathBuf>,
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
    #[command(
        after_help = "Example:\n  align-fl fid weights verify --inception-weights models/inception-2015-12-05.safetensors"
    )]
    Verify {
        /// Inception weights file (default: $ALIGN_FL_MODELS, then ./models).
        #[arg(long)]
        inception_weights: Option<PathBuf>,
    },
}

impl OnBackend for FidArgs {
    type Output = ();

    fn run<B: TrainingOps + ImageOps>(self, backend: &B) -> Result<()> {
        if let Some(FidAction::Weights(WeightsAction::Verify { inception_weights })) = self.action {
            let path = metrics::locate_inception_weights(inception_weights.as_deref())?;
            metrics::verify_inception_weights(backend, &path)?;
            println!("ok  {} (sha256 {}, 94 convolutions)", path.display(), metrics::INCEPTION_SHA256);
            return Ok(());
        }
        if let Some(dir) = &self.run {
            let terminal = Terminal::default();
            let weights = self.inception_weights.as_deref();
            let report = pipeline::add_fid_to_finished_run(backend, dir, self.data_dir.as_deref(), weights, &terminal)?;
            for run in std::iter::once(&report.main).chain(report.baselines.values()) {
                let fid = run.final_metrics.fid.expect("scored");
                println!("{}: FID {fid:.2}, added to {}", run.strategy.as_str(), dir.join("report.json").display());
            }
            return Ok(());
        }
        let (Some(real), Some(fake)) = (&self.real, &self.fake) else {
            bail!(
                "align-fl fid needs --real A and --fake B (IDX image files or folders of PNGs), or --run DIR (a finished \
                 run's folder)"
            );
        };
        if self.batch == 0 {
            bail!("--batch 0: give at least 1 image per batch");
        }
        let sets = [("real", ImageSet::read(real)?), ("fake", ImageSet::read(fake)?)];
        for (what, set) in &sets {
            if set.count < 2 {
                bail!("--{what} holds {} image(s); FID needs at least 2 per set", set.count);
            }
        }
        let path = metrics::locate_inception_weights(self.inception_weights.as_deref())?;
        let model = metrics::Inception::load(backend, &path)?;
        let terminal = Terminal::default();
        let [real_stats, fake_stats] = sets.map(|(what, set)| model.image_set_stats(&set, self.batch, what, &terminal));
        let (real_stats, fake_stats) = (real_stats?, fake_stats?);
        for (what, stats) in [("real", &real_stats), ("fake", &fake_stats)] {
            if let Some(w) = stats.small_set_warning(what) {
                eprintln!("{w}");
            }
        }
        let value = metrics::frechet_distance(&real_stats, &fake_stats)?;
        if let Some(path) = &self.save_stats {
            pipeline::write_file(path, metrics::encode_feature_stats(&[("real", &real_stats), ("fake", &fake_stats)]))?;
            eprintln!("statistics written to {}", path.display());
        }
        if self.json {
            println!("{}", serde_json::json!({"fid": value, "n_real": real_stats.n, "n_fake": fake_stats.n}));
        } else {
            println!("FID {value:.4} ({} real, {} fake images)", real_stats.n, fake_stats.n);
        }
        Ok(())
    }
}

/// A Poisson-sampled Gaussian schedule.
#[derive(Args)]
struct Schedule {
    /// q ∈ (0, 1].
    #[arg(long)]
    sampling_rate: f64,
    /// Number of steps.
    #[arg(long)]
    steps: u64,
    /// δ ∈ (0, 1).
    #[arg(long)]
    delta: f64,
    /// Accountant.
    #[arg(long, value_enum, default_value = "rdp")]
    accountant: AccountantKind,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum PrivacyCommand {
    /// ε of `steps` Poisson-sampled Gaussian steps at rate q and noise multiplier σ
    /// (JSON: {"epsilon", "order", "accountant"}).
    #[command(
        after_help = "Example:\n  align-fl privacy epsilon --sampling-rate 0.02 --noise-multiplier 1.1 --steps 2500 --delta 1e-5"
    )]
    Epsilon {
        /// σ > 0.
        #[arg(long)]
        noise_multiplier: f64,
        #[command(flatten)]
        schedule: Schedule,
    },
    /// The smallest σ whose ε after `steps` steps at rate q is at most the target
    /// (JSON: {"noise_multiplier", "epsilon"}).
    #[command(
        after_help = "Example:\n  align-fl privacy calibrate --target-epsilon 10 --delta 1e-5 --sampling-rate 0.02 --steps 2500 --accountant pld"
    )]
    Calibrate {
        /// Target ε.
        #[arg(long)]
        target_epsilon: f64,
        #[command(flatten)]
        schedule: Schedule,
    },
}

fn privacy_command(cmd: PrivacyCommand) -> Result<()> {
    use privacy::{Accountant, DpEvent};
    match cmd {
        PrivacyCommand::Epsilon {
            noise_multiplier,
            schedule: Schedule { sampling_rate, steps, delta, accountant, json },
        } => {
            let mut acc = accountant.make();
            acc.compose(DpEvent::PoissonSampledGaussian { sampling_rate, noise_multiplier, steps })?;
            let eps = acc.epsilon(delta)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"epsilon": eps.epsilon, "order": eps.order, "accountant": accountant})
                );
            } else {
                let order = eps.order.map(|o| format!(" (Rényi order {o})")).unwrap_or_default();
                println!("ε = {:.6} at δ = {delta:e}{order}, {} accountant", eps.epsilon, accountant.name());
            }
        }
        PrivacyCommand::Calibrate {
            target_epsilon,
            schedule: Schedule { sampling_rate, steps, delta, accountant, json },
        } => {
            let (sigma, eps) =
                privacy::calibrate_noise_multiplier(accountant, target_epsilon, delta, sampling_rate, steps)?;
            if let Some(warning) = privacy::implausible_noise(sigma, target_epsilon, delta) {
                eprintln!("{warning}");
            }
            if json {
                println!("{}", serde_json::json!({"noise_multiplier": sigma, "epsilon": eps}));
            } else {
                println!("σ = {sigma:.6} gives ε = {eps:.6} at δ = {delta:e} ({} accountant)", accountant.name());
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum DataCommand {
    /// Put the dataset files into the data directory (download, or copy with --from).
    #[command(
        after_help = "Examples:\n  align-fl data fetch --dataset mnist\n  align-fl data fetch --dataset fashion-mnist --from ~/Downloads/fashion"
    )]
    Fetch {
        /// Which dataset; both when omitted.
        #[arg(long, value_enum)]
        dataset: Option<DatasetKind>,
        /// Data directory (default: $ALIGN_FL_DATA, then ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Copy from this local directory instead of downloading
        /// (e.g. /usr/share/datasets/fashion-mnist).
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// Check presence, SHA-256 and IDX headers of every dataset file.
    #[command(after_help = "Example:\n  align-fl data verify --data-dir data")]
    Verify {
        /// Data directory (default: $ALIGN_FL_DATA, then ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Write the small committed subset (first N images per class) from a full data directory.
    #[command(
        after_help = "Example:\n  align-fl data subset --from data --out data/subset --train-per-class 300 --test-per-class 100"
    )]
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
    /// Write one client's shard of a config's partition as an IDX image file: the images
    /// `align-fl client round --data-dir` trains that client on, in the form `--images` reads.
    #[command(
        after_help = "Example:\n  align-fl data shard --config configs/quick.toml --client 2 --out client-2.idx\n  align-fl client round --client 2 --images client-2.idx --state state/client-2 --downlink round.bin --update update.bin"
    )]
    Shard {
        /// Experiment config (TOML): its dataset, partition and seed cut the shard.
        #[arg(long)]
        config: PathBuf,
        /// The config's seed instead (the partition depends on it).
        #[arg(long)]
        seed: Option<u64>,
        /// The client (0-based).
        #[arg(long)]
        client: usize,
        /// Data directory (default: config's data_dir, then $ALIGN_FL_DATA, then ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The IDX image file to write.
        #[arg(long)]
        out: PathBuf,
    },
}

fn data_command(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Fetch { dataset, data_dir, from } => {
            let dir = data::resolve_data_dir(data_dir.as_deref());
            for kind in dataset.map_or(DatasetKind::ALL.to_vec(), |d| vec![d]) {
                eprintln!("fetching {} into {}", kind.display_name(), dir.join(kind.dir_name()).display());
                for path in data::fetch(&dir, kind, from.as_deref())? {
                    println!("ok  {}", path.display());
                }
            }
        }
        DataCommand::Verify { data_dir } => {
            let dir = data::resolve_data_dir(data_dir.as_deref());
            let mut failed = 0;
            for check in DatasetKind::ALL.into_iter().flat_map(|kind| data::verify(&dir, kind)) {
                match check.result {
                    Ok(path) => println!("ok      {}", path.display()),
                    Err(e) => {
                        failed += 1;
                        println!("FAILED  {}: {e}", check.name);
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} file(s) in {} failed verification", dir.display());
            }
        }
        DataCommand::Subset { from, out, train_per_class, test_per_class } => {
            let sizes = data::SubsetSizes { train_per_class, test_per_class };
            for path in data::make_subset(&from, &out, sizes)? {
                println!("wrote {}", path.display());
            }
        }
        DataCommand::Shard { config, seed, client, data_dir, out } => {
            let mut cfg = ExperimentConfig::load(&config)?;
            cfg.seed = seed.unwrap_or(cfg.seed);
            cfg.validate()?;
            let count = pipeline::deploy::write_client_shard(&cfg, &cfg.data_dir(data_dir.as_deref()), client, &out)?;
            println!("wrote {}: client {client}'s {count} training images (seed {})", out.display(), cfg.seed);
        }
    }
    Ok(())
}

/// `--version`: the release, the CPU kernels this machine runs and the GPU backends this build has.
fn version() -> String {
    let gpu: Vec<&str> = [cfg!(feature = "wgpu").then_some("wgpu"), cfg!(feature = "cuda").then_some("cuda")]
        .into_iter()
        .flatten()
        .collect();
    format!(
        "{} (CPU kernels: {} on this machine, chosen at run time among AVX-512F, AVX2 and baseline; GPU backends: {})",
        env!("CARGO_PKG_VERSION"),
        tensor_kernels::vector_instructions(),
        if gpu.is_empty() { "none in this build (features wgpu, cuda)".to_string() } else { gpu.join(", ") }
    )
}

fn main() {
    use clap::{CommandFactory, FromArgMatches};
    // clap keeps a version for the whole run: leaking the one string is what its `string` feature would do.
    let matches = Cli::command().version(&*Box::leak(version().into_boxed_str())).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Run(args) => run_command(*args),
        Command::Data(cmd) => data_command(cmd),
        Command::Privacy(cmd) => privacy_command(cmd),
        Command::Models(cmd) => models::models_command(cmd),
        Command::Fid(args) => dispatch(args.backend, args),
        Command::Reproduce(args) => reproduce_command(args),
        Command::Client(cmd) => deploy::client_command(cmd),
        Command::Server(cmd) => deploy::server_command(cmd),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
