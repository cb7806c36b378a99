//! Settings given beside a config file (the command line's flags), applied on top of it.

use std::path::PathBuf;
#[cfg(feature = "clap")]
use std::str::FromStr;

use data::DatasetKind;
use privacy::{AccountantKind, ClippingRule, NoiseSource, Sampling};
use vae::{GradientScope, PenaltyTarget};

use crate::config::{ExperimentConfig, Mechanism, StrategyKind};
use crate::{PipelineError, Result};

/// Overrides of an [`ExperimentConfig`]; `None` (or `false`) leaves the config's value.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct Overrides {
    /// Main strategy.
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub strategy: Option<StrategyKind>,
    /// Baselines to compare against, comma-separated, or "none".
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    pub compare: Option<Vec<String>>,
    /// Federated rounds.
    #[cfg_attr(feature = "clap", arg(long))]
    pub rounds: Option<usize>,
    /// Number of clients (the first N class pairs).
    #[cfg_attr(feature = "clap", arg(long))]
    pub clients: Option<usize>,
    /// Primary dataset (the other one supplies client 0's outliers).
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub dataset: Option<DatasetKind>,
    /// Seed of every random stream.
    #[cfg_attr(feature = "clap", arg(long))]
    pub seed: Option<u64>,
    /// Local epochs per round.
    #[cfg_attr(feature = "clap", arg(long))]
    pub local_epochs: Option<usize>,
    /// Synthetic samples per client per round (ALIGN-FL server).
    #[cfg_attr(feature = "clap", arg(long))]
    pub synthetic_samples: Option<usize>,
    /// Server epochs per round (ALIGN-FL).
    #[cfg_attr(feature = "clap", arg(long))]
    pub server_epochs: Option<usize>,
    /// β (λ_KL) of ALIGN-FL clients and server.
    #[cfg_attr(feature = "clap", arg(long))]
    pub lambda_kl: Option<f32>,
    /// Privacy mechanism of the clients: none, dp-sgd or lipschitz.
    #[cfg_attr(feature = "clap", arg(long, value_parser = Mechanism::from_str))]
    pub privacy: Option<Mechanism>,
    /// DP-SGD: target ε per client over the whole run.
    #[cfg_attr(feature = "clap", arg(long))]
    pub epsilon: Option<f64>,
    /// DP-SGD: δ.
    #[cfg_attr(feature = "clap", arg(long))]
    pub delta: Option<f64>,
    /// DP-SGD: accountant.
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub accountant: Option<AccountantKind>,
    /// DP-SGD: clipping rule.
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub clipping: Option<ClippingRule>,
    /// DP-SGD: clipping threshold C (the initial one under adaptive clipping).
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_grad_norm: Option<f64>,
    /// DP-SGD: batch sampling (shuffled is not covered by the accountant).
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub sampling: Option<Sampling>,
    /// DP-SGD: noise randomness (reproducible noise is not covered by the guarantee).
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub noise: Option<NoiseSource>,
    /// DP-SGD: let clients fit the GMM prior on private latents (voids the guarantee).
    #[cfg_attr(feature = "clap", arg(long))]
    pub allow_non_private_prior: bool,
    /// DP-SGD: still run the outlier analysis, which reads client 0's raw training images and
    /// shows some in a figure (the report then says the guarantee does not hold).
    #[cfg_attr(feature = "clap", arg(long))]
    pub show_training_images: bool,
    /// DP-SGD: clip and noise the whole VAE (the paper's) or the decoder only (the authors' dec_dp
    /// ablation, not covered by the guarantee).
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub dp_scope: Option<GradientScope>,
    /// LCD-VAE: weight λ_lip of the gradient penalty.
    #[cfg_attr(feature = "clap", arg(long))]
    pub lambda_lip: Option<f32>,
    /// LCD-VAE: put the penalty on the decoder (the paper's) or on the encoder (the authors'
    /// code's alternative).
    #[cfg_attr(feature = "clap", arg(long, value_enum))]
    pub lipschitz_at: Option<PenaltyTarget>,
    /// Skip FID (it needs the Inception weights and dominates a CPU run's time).
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_fid: bool,
    /// Images decoded from N(0, I) per FID (default 2000).
    #[cfg_attr(feature = "clap", arg(long))]
    pub fid_samples: Option<usize>,
    /// Also compute FID every K rounds (default: final round only).
    #[cfg_attr(feature = "clap", arg(long))]
    pub fid_every: Option<usize>,
    /// Inception weights file (default: $ALIGN_FL_MODELS, then ./models).
    #[cfg_attr(feature = "clap", arg(long))]
    pub inception_weights: Option<PathBuf>,
}

impl Overrides {
    /// Writes every given setting into `cfg`.
    pub fn apply(&self, cfg: &mut ExperimentConfig) -> Result<()> {
        fn set<T: Clone>(value: &Option<T>, field: &mut T) {
            if let Some(v) = value {
                *field = v.clone();
            }
        }
        set(&self.strategy, &mut cfg.strategy);
        if let Some(list) = &self.compare {
            cfg.compare = list
                .iter()
                .filter(|n| n.as_str() != "none")
                .map(|n| n.parse().map_err(|e| PipelineError::Config(format!("--compare: {e}, or none"))))
                .collect::<Result<_>>()?;
        }
        set(&self.rounds, &mut cfg.rounds);
        set(&self.clients, &mut cfg.partition.clients);
        set(&self.dataset, &mut cfg.dataset);
        set(&self.seed, &mut cfg.seed);
        set(&self.local_epochs, &mut cfg.client.local_epochs);
        set(&self.synthetic_samples, &mut cfg.server.synthetic_samples);
        set(&self.server_epochs, &mut cfg.server.server_epochs);
        set(&self.lambda_kl, &mut cfg.client.lambda_kl);
        set(&self.lambda_kl, &mut cfg.server.lambda_kl);
        let dp = &mut cfg.privacy;
        set(&self.privacy, &mut dp.mechanism);
        set(&self.epsilon, &mut dp.epsilon);
        set(&self.delta, &mut dp.delta);
        set(&self.accountant, &mut dp.accountant);
        set(&self.clipping, &mut dp.clipping);
        set(&self.max_grad_norm, &mut dp.max_grad_norm);
        set(&self.sampling, &mut dp.sampling);
        set(&self.noise, &mut dp.noise);
        dp.allow_non_private_prior |= self.allow_non_private_prior;
        dp.show_training_images |= self.show_training_images;
        set(&self.dp_scope, &mut dp.scope);
        set(&self.lambda_lip, &mut dp.lambda_lip);
        set(&self.lipschitz_at, &mut dp.lipschitz_at);
        cfg.fid.enabled &= !self.no_fid;
        set(&self.fid_samples, &mut cfg.fid.samples);
        set(&self.fid_every, &mut cfg.fid.every);
        if let Some(w) = &self.inception_weights {
            cfg.fid.weights = Some(w.clone());
        }
        self.refuse_flags_without_effect(cfg)
    }

    /// A flag the chosen mode ignores is an error naming the mode it needs, not a silent no-op.
    fn refuse_flags_without_effect(&self, cfg: &ExperimentConfig) -> Result<()> {
        let dp_sgd = [
            ("--epsilon", self.epsilon.is_some()),
            ("--delta", self.delta.is_some()),
            ("--accountant", self.accountant.is_some()),
            ("--clipping", self.clipping.is_some()),
            ("--max-grad-norm", self.max_grad_norm.is_some()),
            ("--sampling", self.sampling.is_some()),
            ("--noise", self.noise.is_some()),
            ("--allow-non-private-prior", self.allow_non_private_prior),
            ("--show-training-images", self.show_training_images),
            ("--dp-scope", self.dp_scope.is_some()),
        ];
        let lipschitz = [("--lambda-lip", self.lambda_lip.is_some()), ("--lipschitz-at", self.lipschitz_at.is_some())];
        let fid = [
            ("--fid-samples", self.fid_samples.is_some()),
            ("--fid-every", self.fid_every.is_some()),
            ("--inception-weights", self.inception_weights.is_some()),
        ];
        let mechanism = cfg.privacy.mechanism;
        let ignored = [
            (&dp_sgd[..], mechanism != Mechanism::DpSgd, "it needs --privacy dp-sgd"),
            (&lipschitz[..], mechanism != Mechanism::Lipschitz, "it needs --privacy lipschitz"),
            (&fid[..], !cfg.fid.enabled, "FID is off (--no-fid or fid.enabled = false)"),
        ];
        for (flags, off, why) in ignored {
            if let Some((flag, _)) = flags.iter().find(|(_, given)| *given).filter(|_| off) {
                return Err(PipelineError::Config(format!("{flag} has no effect here: {why}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_set_what_they_name_and_leave_the_rest() {
        let mut cfg = ExperimentConfig::default();
        let o = Overrides {
            compare: Some(vec!["none".into()]),
            privacy: Some(Mechanism::DpSgd),
            lambda_kl: Some(0.5),
            noise: Some(NoiseSource::Reproducible),
            no_fid: true,
            ..Overrides::default()
        };
        o.apply(&mut cfg).unwrap();
        assert!(cfg.compare.is_empty());
        assert_eq!((cfg.privacy.mechanism, cfg.privacy.noise), (Mechanism::DpSgd, NoiseSource::Reproducible));
        assert_eq!((cfg.client.lambda_kl, cfg.server.lambda_kl, cfg.fedavg.lambda_kl), (0.5, 0.5, 1.0));
        assert!(!cfg.fid.enabled);
        assert_eq!(cfg.rounds, ExperimentConfig::default().rounds);
        let bad = Overrides { compare: Some(vec!["fedsgd".into()]), ..Overrides::default() };
        let e = bad.apply(&mut cfg).unwrap_err().to_string();
        assert!(e.contains("--compare") && e.contains("fedsgd"), "{e}");
    }

    #[test]
    fn flags_the_mode_ignores_are_refused() {
        let refused = |o: Overrides, want: &str| {
            let e = o.apply(&mut ExperimentConfig::default()).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        };
        refused(
            Overrides { epsilon: Some(1.0), ..Overrides::default() },
            "--epsilon has no effect here: it needs --privacy dp-sgd",
        );
        refused(
            Overrides { privacy: Some(Mechanism::DpSgd), lambda_lip: Some(0.1), ..Overrides::default() },
            "--lambda-lip has no effect here: it needs --privacy lipschitz",
        );
        refused(
            Overrides { no_fid: true, fid_samples: Some(10), ..Overrides::default() },
            "--fid-samples has no effect",
        );
        let fine = Overrides { privacy: Some(Mechanism::DpSgd), epsilon: Some(1.0), ..Overrides::default() };
        fine.apply(&mut ExperimentConfig::default()).unwrap();
    }
}
