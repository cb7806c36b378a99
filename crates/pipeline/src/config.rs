//! The experiment configuration: a TOML file (see `configs/`) with overrides from a command line.
//! Its choices are the library crates' own enums (dataset, accountant, clipping rule, sampling,
//! noise source, gradient scope, penalty target, prior); an impossible combination is refused by
//! [`ExperimentConfig::validate`] with the setting named.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use data::DatasetKind;
use federation::{PriorFit, PriorKind};
use privacy::{AccountantKind, AdaptiveClipping, ClippingRule, DpSgdSettings, NoiseSource, Sampling};
use serde::{Deserialize, Serialize};
use vae::{GradientScope, PenaltyTarget};

use crate::{PipelineError, Result};

/// The largest experiment config read (1 MiB; the paper protocol's is under 2 KiB).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Which server strategy runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// ALIGN-FL: decoders + priors up, synthetic data at the server.
    AlignFl,
    /// FedAvg: sample-weighted parameter averaging.
    Fedavg,
    /// FedProx: FedAvg with a proximal term.
    Fedprox,
}

impl StrategyKind {
    /// Every strategy.
    pub const ALL: [StrategyKind; 3] = [StrategyKind::AlignFl, StrategyKind::Fedavg, StrategyKind::Fedprox];

    /// Name as used in reports and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::AlignFl => "align-fl",
            StrategyKind::Fedavg => "fedavg",
            StrategyKind::Fedprox => "fedprox",
        }
    }
}

impl FromStr for StrategyKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| format!("unknown strategy {name:?}; use align-fl, fedavg or fedprox"))
    }
}

/// Which privacy mechanism the clients use. DP-SGD and LCD-VAE together are refused when
/// parsed (`dp-sgd,lipschitz`), with the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum Mechanism {
    /// No privacy mechanism.
    None,
    /// DP-SGD on the client VAEs with an (ε, δ) accountant.
    DpSgd,
    /// LCD-VAE: a Lipschitz gradient penalty on the client decoders (empirical privacy).
    Lipschitz,
}

impl Mechanism {
    const ALL: [Mechanism; 3] = [Mechanism::None, Mechanism::DpSgd, Mechanism::Lipschitz];

    /// Name in configs, on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::None => "none",
            Mechanism::DpSgd => "dp-sgd",
            Mechanism::Lipschitz => "lipschitz",
        }
    }
}

impl From<Mechanism> for &'static str {
    fn from(m: Mechanism) -> Self {
        m.as_str()
    }
}

impl FromStr for Mechanism {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        let mut parts: Vec<&str> = name.split(',').map(str::trim).collect();
        parts.sort_unstable();
        if parts == ["dp-sgd", "lipschitz"] {
            return Err("dp-sgd,lipschitz is refused: the gradient penalty mixes two samples of a batch \
                 (z̃ = α·zᵢ + (1 − α)·z_perm(i)), so it has no per-sample gradient to clip and DP-SGD's \
                 guarantee would not cover it. Use dp-sgd or lipschitz alone"
                .into());
        }
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == name)
            .ok_or_else(|| format!("unknown privacy mechanism {name:?}; use none, dp-sgd or lipschitz"))
    }
}

impl TryFrom<String> for Mechanism {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        name.parse()
    }
}

/// How the clients' data is cut (DESIGN.md §2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PartitionConfig {
    /// Number of clients; client k gets `class_pairs[k]`.
    pub clients: usize,
    /// Classes of each client.
    pub class_pairs: Vec<Vec<u8>>,
    /// Training images per class.
    pub samples_per_class: usize,
    /// Cross-domain outliers at client 0.
    pub outliers: usize,
    /// Test images are split into this many parts; the last is the evaluation set.
    pub eval_parts: usize,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        PartitionConfig {
            clients: 5,
            class_pairs: (0..5u8).map(|k| vec![2 * k, 2 * k + 1]).collect(),
            samples_per_class: 6000,
            outliers: 600,
            eval_parts: 5,
        }
    }
}

/// An MLP VAE architecture (input is fixed at 784 by the data).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Encoder hidden widths.
    pub encoder: Vec<usize>,
    /// Latent size.
    pub latent: usize,
    /// Decoder hidden widths.
    pub decoder: Vec<usize>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig { encoder: vec![512, 256, 128], latent: 2, decoder: vec![128, 256, 512] }
    }
}

impl ModelConfig {
    /// As a VAE architecture over 28×28 images.
    pub fn vae(&self) -> vae::VaeConfig {
        vae::VaeConfig {
            input: data::IMAGE_PIXELS,
            encoder: self.encoder.clone(),
            latent: self.latent,
            decoder: self.decoder.clone(),
        }
    }
}

/// Local training of every client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Epochs per round.
    pub local_epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f32,
    /// β (λ_KL) of ALIGN-FL clients.
    pub lambda_kl: f32,
    /// Prior uploaded with the decoder.
    pub prior: PriorKind,
    /// GMM components.
    pub gmm_components: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            local_epochs: 10,
            batch_size: 128,
            learning_rate: 1e-3,
            lambda_kl: 0.1,
            prior: PriorKind::Gmm,
            gmm_components: 10,
        }
    }
}

/// ALIGN-FL server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Latents decoded per client per round.
    pub synthetic_samples: usize,
    /// Epochs of global training per round.
    pub server_epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f32,
    /// β of the global VAE.
    pub lambda_kl: f32,
    /// Global architecture (defaults to `[model]`).
    pub model: Option<ModelConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            synthetic_samples: 5000,
            server_epochs: 5,
            batch_size: 128,
            learning_rate: 1e-3,
            lambda_kl: 0.1,
            model: None,
        }
    }
}

/// FedAvg / FedProx baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FedAvgConfig {
    /// β of FedAvg clients (1 in the authors' runs).
    pub lambda_kl: f32,
    /// FedProx's μ.
    pub fedprox_mu: f32,
}

impl Default for FedAvgConfig {
    fn default() -> Self {
        FedAvgConfig { lambda_kl: 1.0, fedprox_mu: 0.01 }
    }
}

/// Differential privacy of the clients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Mechanism.
    pub mechanism: Mechanism,
    /// Target ε per client over the whole run.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// Accountant that calibrates σ and reports ε.
    pub accountant: AccountantKind,
    /// Clipping rule.
    pub clipping: ClippingRule,
    /// Clipping threshold (the initial one under adaptive clipping).
    pub max_grad_norm: f64,
    /// Adaptive clipping: target fraction of unclipped samples.
    pub target_quantile: f64,
    /// Adaptive clipping: geometric learning rate of the threshold.
    pub clip_learning_rate: f64,
    /// Adaptive clipping: noise on the unclipped count (default batch size / 20).
    pub count_noise: Option<f64>,
    /// Batch sampling.
    pub sampling: Sampling,
    /// Noise randomness.
    pub noise: NoiseSource,
    /// Let clients fit the GMM prior on their private latents (voids the guarantee).
    pub allow_non_private_prior: bool,
    /// The layers DP-SGD clips and noises: "whole-model" (the paper's) or "decoder-only" (the
    /// authors' dec_dp ablation; no guarantee follows).
    pub scope: GradientScope,
    /// LCD-VAE: λ_lip, the weight of the gradient penalty.
    pub lambda_lip: f32,
    /// LCD-VAE: the network the penalty constrains ("decoder", the paper's; or "encoder").
    pub lipschitz_at: PenaltyTarget,
    /// DP-SGD: still run the outlier analysis, which reads client 0's raw training images and
    /// shows some in a figure (the report then says the guarantee does not hold).
    pub show_training_images: bool,
}

impl PrivacyConfig {
    /// Client DP-SGD's settings at noise multiplier `sigma`, with `batch_size` for the default
    /// count noise (batch / 20) and `seed` for reproducible noise.
    pub fn dp_sgd_settings(&self, sigma: f64, batch_size: usize, seed: u64) -> DpSgdSettings {
        DpSgdSettings {
            noise_multiplier: sigma,
            max_grad_norm: self.max_grad_norm,
            clipping: self.clipping,
            adaptive: AdaptiveClipping {
                target_quantile: self.target_quantile,
                learning_rate: self.clip_learning_rate,
                count_noise: self.count_noise.unwrap_or(batch_size as f64 / 20.0),
            },
            sampling: self.sampling,
            noise: self.noise,
            seed,
            scope: self.scope,
        }
    }

    /// λ_lip for client training: the configured weight under LCD-VAE, else 0.
    pub fn lipschitz_weight(&self) -> f32 {
        if self.mechanism == Mechanism::Lipschitz {
            self.lambda_lip
        } else {
            0.0
        }
    }
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            mechanism: Mechanism::None,
            epsilon: 10.0,
            delta: 1e-5,
            accountant: AccountantKind::Rdp,
            clipping: ClippingRule::Adaptive,
            max_grad_norm: 1.0,
            target_quantile: 0.5,
            clip_learning_rate: 0.2,
            count_noise: None,
            sampling: Sampling::Poisson,
            noise: NoiseSource::Secure,
            allow_non_private_prior: false,
            scope: GradientScope::WholeModel,
            lambda_lip: 0.1,
            lipschitz_at: PenaltyTarget::Decoder,
            show_training_images: false,
        }
    }
}

/// A whole experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Seed of every random stream.
    pub seed: u64,
    /// Primary dataset.
    pub dataset: DatasetKind,
    /// Data directory (relative paths are relative to the config file).
    pub data_dir: Option<PathBuf>,
    /// Main strategy.
    pub strategy: StrategyKind,
    /// Baselines run on the same partition for the comparison in the report.
    pub compare: Vec<StrategyKind>,
    /// Federated rounds.
    pub rounds: usize,
    /// Data partition.
    pub partition: PartitionConfig,
    /// Client architecture.
    pub model: ModelConfig,
    /// Per-client architectures (ALIGN-FL only); overrides `model` for client k.
    pub client_models: Vec<ModelConfig>,
    /// Client training.
    pub client: ClientConfig,
    /// ALIGN-FL server.
    pub server: ServerConfig,
    /// FedAvg / FedProx.
    pub fedavg: FedAvgConfig,
    /// Differential privacy.
    pub privacy: PrivacyConfig,
    /// FID of the global decoder's samples against the evaluation images.
    pub fid: FidConfig,
}

/// FID settings of a run (DESIGN.md §2: evaluation images vs as many decoded from N(0, I)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FidConfig {
    /// Compute FID (needs the Inception weights; without them the report says why it is missing).
    pub enabled: bool,
    /// Images decoded from z ~ N(0, I) per FID.
    pub samples: usize,
    /// Also compute FID every this many rounds (0: final round only).
    pub every: usize,
    /// Images per Inception batch.
    pub batch: usize,
    /// Inception weights file (default: $ALIGN_FL_MODELS, then ./models).
    pub weights: Option<PathBuf>,
}

impl FidConfig {
    /// Whether round `round` of `rounds` scores FID: the final round, and every `every`-th.
    pub fn scores_round(&self, round: usize, rounds: usize) -> bool {
        round == rounds || (self.every > 0 && round.is_multiple_of(self.every))
    }

    /// Whether a run of `rounds` rounds scores FID after its last round alone (then FID can be
    /// added later from the saved final model).
    pub fn scores_last_round_only(&self, rounds: usize) -> bool {
        !(1..rounds).any(|r| self.scores_round(r, rounds))
    }
}

impl Default for FidConfig {
    fn default() -> Self {
        FidConfig { enabled: true, samples: 2000, every: 0, batch: 8, weights: None }
    }
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig {
            seed: 0,
            dataset: DatasetKind::Mnist,
            data_dir: None,
            strategy: StrategyKind::AlignFl,
            compare: vec![StrategyKind::Fedavg],
            rounds: 5,
            partition: PartitionConfig::default(),
            model: ModelConfig::default(),
            client_models: Vec::new(),
            client: ClientConfig::default(),
            server: ServerConfig::default(),
            fedavg: FedAvgConfig::default(),
            privacy: PrivacyConfig::default(),
            fid: FidConfig::default(),
        }
    }
}

impl ExperimentConfig {
    /// Reads a TOML file; a relative `data_dir` is resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = data::read_bounded(path, MAX_CONFIG_BYTES)?;
        let text = String::from_utf8(bytes).map_err(|_| PipelineError::ConfigFile {
            path: path.to_path_buf(),
            error: "it is not UTF-8 text".into(),
        })?;
        let mut cfg: ExperimentConfig = toml::from_str(&text)
            .map_err(|e| PipelineError::ConfigFile { path: path.to_path_buf(), error: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for dir in [&mut cfg.data_dir, &mut cfg.fid.weights].into_iter().flatten() {
            if dir.is_relative() {
                *dir = base.join(&*dir);
            }
        }
        Ok(cfg)
    }

    /// What this config sets differently from `reference` (called `name`), one entry per setting
    /// as "`key` = ours (name: theirs)", in key order; a section only one side has is one entry.
    pub fn differences_from(&self, reference: &ExperimentConfig, name: &str) -> Vec<String> {
        let value = |c: &ExperimentConfig| toml::Value::try_from(c).expect("an experiment config always serialises");
        let mut out = Vec::new();
        toml_differences("", Some(&value(self)), Some(&value(reference)), name, &mut out);
        out
    }

    /// The prior clients upload: under DP-SGD, N(0, I) unless the non-private GMM is allowed.
    pub fn prior(&self) -> PriorFit {
        let dp = &self.privacy;
        let kind = if dp.mechanism == Mechanism::DpSgd && !dp.allow_non_private_prior {
            PriorKind::StandardNormal
        } else {
            self.client.prior
        };
        PriorFit { kind, gmm_components: self.client.gmm_components }
    }

    /// Whether a run analyses client 0's outliers, which reads its raw training images and
    /// writes some of them as a figure: not under DP-SGD unless `privacy.show_training_images`
    /// asks for it (the analysis is not covered by the accountant).
    pub fn analyses_training_images(&self) -> bool {
        self.partition.outliers > 0 && (self.privacy.mechanism != Mechanism::DpSgd || self.privacy.show_training_images)
    }

    /// Whether this experiment's clients can serve `other`'s server as well: both are ALIGN-FL
    /// without baselines (whose clients never receive a global model) and differ in `[server]`
    /// and `[fid]` alone, so their clients train alike.
    pub fn shares_clients_with(&self, other: &ExperimentConfig) -> bool {
        let alone =
            |c: &ExperimentConfig| c.strategy == StrategyKind::AlignFl && c.compare.iter().all(|&b| b == c.strategy);
        let clients_view = |c: &ExperimentConfig| ExperimentConfig {
            server: ServerConfig::default(),
            fid: FidConfig::default(),
            ..c.clone()
        };
        alone(self) && alone(other) && clients_view(self) == clients_view(other)
    }

    /// The data directory: `flag`, else this config's `data_dir`, else `$ALIGN_FL_DATA`, else
    /// `./data`.
    pub fn data_dir(&self, flag: Option<&Path>) -> PathBuf {
        data::resolve_data_dir(flag.or(self.data_dir.as_deref()))
    }

    /// Architecture of client k.
    pub fn client_model(&self, k: usize) -> &ModelConfig {
        self.client_models.get(k).unwrap_or(&self.model)
    }

    /// Architecture of the global model.
    pub fn global_model(&self) -> &ModelConfig {
        self.server.model.as_ref().unwrap_or(&self.model)
    }

    /// The partition to cut.
    pub fn partition_spec(&self) -> data::PartitionSpec {
        data::PartitionSpec {
            client_classes: self.partition.class_pairs[..self.partition.clients.min(self.partition.class_pairs.len())]
                .to_vec(),
            samples_per_class: self.partition.samples_per_class,
            outliers: self.partition.outliers,
            eval_parts: self.partition.eval_parts,
            seed: self.seed,
        }
    }

    /// Rejects settings that cannot work, naming the setting.
    pub fn validate(&self) -> Result<()> {
        macro_rules! bail {
            ($($arg:tt)*) => { return Err(PipelineError::Config(format!($($arg)*))) };
        }
        let p = &self.partition;
        if p.clients == 0 {
            bail!("partition.clients is 0: a federation needs at least one client");
        }
        if p.clients > p.class_pairs.len() {
            bail!(
                "partition.clients is {} but only {} class pairs are given: each client needs its own classes (add to partition.class_pairs or lower --clients)",
                p.clients,
                p.class_pairs.len()
            );
        }
        self.partition_spec().validate()?;
        if self.rounds == 0 {
            bail!("rounds is 0: run at least one round");
        }
        let positive = [
            ("client.local_epochs", self.client.local_epochs),
            ("client.batch_size", self.client.batch_size),
            ("server.batch_size", self.server.batch_size),
            ("server.synthetic_samples", self.server.synthetic_samples),
            ("server.server_epochs", self.server.server_epochs),
            ("fid.batch", self.fid.batch),
        ];
        if self.fid.enabled && self.fid.samples < 2 {
            bail!(
                "fid.samples is {}: FID needs at least 2 images (or set fid.enabled = false / --no-fid)",
                self.fid.samples
            );
        }
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            bail!("{name} is 0: it must be at least 1");
        }
        for (name, lr) in
            [("client.learning_rate", self.client.learning_rate), ("server.learning_rate", self.server.learning_rate)]
        {
            if !(lr > 0.0 && lr.is_finite()) {
                bail!("{name} is {lr}: it must be a positive number");
            }
        }
        for (name, v) in [
            ("client.lambda_kl", self.client.lambda_kl),
            ("server.lambda_kl", self.server.lambda_kl),
            ("fedavg.lambda_kl", self.fedavg.lambda_kl),
            ("fedavg.fedprox_mu", self.fedavg.fedprox_mu),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                bail!("{name} is {v}: it must be a non-negative number");
            }
        }
        if self.client.prior == PriorKind::Gmm && self.client.gmm_components == 0 {
            bail!("client.gmm_components is 0: the paper uses 10");
        }
        for (k, m) in
            std::iter::once(&self.model).chain(&self.client_models).chain(self.server.model.as_ref()).enumerate()
        {
            m.vae().validate().map_err(|e| {
                PipelineError::from(e).within(if k == 0 {
                    "[model]".to_string()
                } else {
                    format!("model #{k} of client_models / server.model")
                })
            })?;
        }
        let dp = &self.privacy;
        if dp.mechanism == Mechanism::Lipschitz && !(dp.lambda_lip > 0.0 && dp.lambda_lip.is_finite()) {
            bail!("privacy.lambda_lip is {}: LCD-VAE needs a positive weight (the paper uses 0.1)", dp.lambda_lip);
        }
        if dp.mechanism == Mechanism::DpSgd {
            if !(dp.epsilon > 0.0 && dp.epsilon.is_finite()) {
                bail!("privacy.epsilon is {}: give a positive target ε (the paper uses 10)", dp.epsilon);
            }
            if !(dp.delta > 0.0 && dp.delta < 1.0) {
                bail!("privacy.delta is {}: it must lie in (0, 1) (the paper uses 1e-5)", dp.delta);
            }
            if !(dp.max_grad_norm > 0.0 && dp.max_grad_norm.is_finite()) {
                bail!("privacy.max_grad_norm is {}: it must be positive", dp.max_grad_norm);
            }
            let strategies = std::iter::once(&self.strategy).chain(&self.compare);
            if strategies.clone().any(|s| *s == StrategyKind::Fedprox) {
                bail!("FedProx's proximal term is not supported with DP-SGD: drop fedprox from --strategy/--compare");
            }
        }
        let uses_fedavg = self.strategy != StrategyKind::AlignFl || !self.compare.is_empty();
        if uses_fedavg && self.client_models.iter().any(|m| m != &self.model) {
            bail!("client_models gives clients different architectures, which FedAvg/FedProx cannot average: run align-fl alone (--compare none)");
        }
        Ok(())
    }
}

/// Appends to `out` where `ours` and `theirs` (the values at `key`; theirs are `name`'s) differ,
/// descending into tables both sides have.
fn toml_differences(
    key: &str,
    ours: Option<&toml::Value>,
    theirs: Option<&toml::Value>,
    name: &str,
    out: &mut Vec<String>,
) {
    if let (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) = (ours, theirs) {
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            let path = if key.is_empty() { k.clone() } else { format!("{key}.{k}") };
            toml_differences(&path, a.get(k), b.get(k), name, out);
        }
    } else if ours != theirs {
        let show = |v: Option<&toml::Value>| v.map_or("not set".to_string(), |v| v.to_string());
        out.push(format!("`{key}` = {} ({name}: {})", show(ours), show(theirs)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_config(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs").join(name)
    }

    #[test]
    fn shipped_configs_parse_and_validate() {
        let names = [
            "paper-mnist.toml",
            "quick.toml",
            "heterogeneous.toml",
            "best-no-privacy.toml",
            "best-dp-sgd.toml",
            "best-no-privacy-latent-8.toml",
            "best-dp-sgd-latent-8.toml",
            "best-dp-sgd-latent-8-server-256.toml",
        ];
        for name in names {
            let cfg = ExperimentConfig::load(&repo_config(name)).unwrap();
            cfg.validate().unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
        let paper = ExperimentConfig::load(&repo_config("paper-mnist.toml")).unwrap();
        assert_eq!(paper.partition, PartitionConfig::default());
        assert_eq!(paper.server.synthetic_samples, 5000);
        assert_eq!(paper.rounds, 5);
        // The beyond-the-paper configs change only what their comments say.
        let mut best = ExperimentConfig::load(&repo_config("best-no-privacy.toml")).unwrap();
        let server_model = best.server.model.take().unwrap();
        assert_eq!(server_model, ModelConfig { latent: 16, ..paper.model.clone() });
        assert_eq!(best, ExperimentConfig { compare: vec![], ..paper.clone() });
        let mut dp = ExperimentConfig::load(&repo_config("best-dp-sgd.toml")).unwrap();
        assert_eq!(dp.server.model.take(), Some(server_model));
        let mut dp_row = ExperimentConfig { compare: vec![], ..paper.clone() };
        dp_row.privacy.mechanism = Mechanism::DpSgd;
        assert_eq!(dp, dp_row);
        let wide = ExperimentConfig::load(&repo_config("best-no-privacy-latent-8.toml")).unwrap();
        let model = ModelConfig { latent: 8, ..paper.model.clone() };
        assert_eq!(wide, ExperimentConfig { compare: vec![], model: model.clone(), ..paper.clone() });
        let wide_dp = ExperimentConfig::load(&repo_config("best-dp-sgd-latent-8.toml")).unwrap();
        assert_eq!(wide_dp, ExperimentConfig { model, ..dp_row });
        let both = ExperimentConfig::load(&repo_config("best-dp-sgd-latent-8-server-256.toml")).unwrap();
        let mut server = wide_dp.server.clone();
        server.model = Some(ModelConfig { latent: 256, ..wide_dp.model.clone() });
        assert_eq!(both, ExperimentConfig { server, ..wide_dp });
        // What a reproduction's rows list as their changes.
        let best = ExperimentConfig::load(&repo_config("best-no-privacy.toml")).unwrap();
        assert_eq!(
            best.differences_from(&paper, "paper"),
            [
                "`compare` = [] (paper: [\"fedavg\"])",
                "`server.model` = { decoder = [128, 256, 512], encoder = [512, 256, 128], latent = 16 } (paper: not set)"
            ]
        );
        assert_eq!(paper.differences_from(&paper, "paper"), Vec::<String>::new());
    }

    #[test]
    fn impossible_configs_name_the_setting() {
        let check = |edit: &dyn Fn(&mut ExperimentConfig), want: &str| {
            let mut c = ExperimentConfig::default();
            edit(&mut c);
            let e = format!("{:#}", c.validate().unwrap_err());
            assert!(e.contains(want), "{e} should mention {want}");
        };
        check(&|c| c.partition.clients = 0, "partition.clients is 0");
        check(&|c| c.partition.clients = 6, "only 5 class pairs");
        check(&|c| c.partition.class_pairs[1] = vec![2, 12], "outside 0–9");
        check(&|c| c.model.latent = 0, "latent size is 0");
        check(&|c| c.rounds = 0, "rounds is 0");
        check(&|c| c.client.learning_rate = f32::NAN, "client.learning_rate");
        check(
            &|c| c.privacy = PrivacyConfig { mechanism: Mechanism::DpSgd, epsilon: 0.0, ..c.privacy.clone() },
            "privacy.epsilon is 0",
        );
        check(
            &|c| c.client_models = vec![ModelConfig { latent: 3, ..ModelConfig::default() }],
            "FedAvg/FedProx cannot average",
        );
    }

    #[test]
    fn dp_sgd_with_lipschitz_is_refused_with_the_reason_and_names_round_trip() {
        let e = toml::from_str::<ExperimentConfig>("[privacy]\nmechanism = \"dp-sgd,lipschitz\"").unwrap_err();
        assert!(e.to_string().contains("no per-sample gradient to clip"), "{e}");
        assert!("lipschitz, dp-sgd".parse::<Mechanism>().unwrap_err().contains("refused"));
        for m in Mechanism::ALL {
            let text = toml::to_string(&PrivacyConfig { mechanism: m, ..PrivacyConfig::default() }).unwrap();
            assert_eq!(toml::from_str::<PrivacyConfig>(&text).unwrap().mechanism, m);
        }
        for s in StrategyKind::ALL {
            assert_eq!(s.as_str().parse::<StrategyKind>(), Ok(s));
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = toml::from_str::<ExperimentConfig>("roundz = 3").unwrap_err().to_string();
        assert!(e.contains("roundz"), "{e}");
    }
}
