//! What a reproduction runs: the table's rows, the curves, and the paper's numbers beside them
//! (DESIGN.md §2).

use std::fmt;
use std::str::FromStr;

use privacy::AccountantKind;
use serde::Serialize;
use vae::GradientScope;

use crate::config::{ExperimentConfig, Mechanism, StrategyKind};

/// The quick preset (committed subset, scaled-down protocol).
pub(crate) const QUICK: &str = include_str!("../../../../configs/quick.toml");
/// The architectures of the heterogeneous row.
const HETEROGENEOUS: &str = include_str!("../../../../configs/heterogeneous.toml");

/// The FID range the paper reports over its ALIGN-FL variants (DESIGN.md gives no per-variant FID).
pub const PAPER_ALIGN_FID: (f64, f64) = (81.91, 98.46);

/// The paper's numbers for a row (DESIGN.md §2), in percent / FID units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PaperNumbers {
    /// Accuracy %.
    pub accuracy: Option<f64>,
    /// Weighted F1 %.
    pub f1: Option<f64>,
    /// FID.
    pub fid: Option<f64>,
}

/// A row of the comparison table: one method, run for every seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    /// ALIGN-FL without privacy.
    AlignFl,
    /// DP-SGD at ε = 10 with the RDP accountant.
    DpRdp,
    /// DP-SGD at ε = 10 with the PLD accountant.
    DpPld,
    /// DP-SGD on the decoder only (the authors' dec_dp).
    DpDecoder,
    /// LCD-VAE at λ_lip = 0.1.
    Lcd,
    /// FedAvg.
    Fedavg,
    /// FedProx at μ = 0.01.
    Fedprox,
    /// ALIGN-FL with a different architecture per client.
    Heterogeneous,
}

impl Row {
    /// Every row, in table order.
    pub const ALL: [Row; 8] =
        [Row::AlignFl, Row::DpRdp, Row::DpPld, Row::DpDecoder, Row::Lcd, Row::Fedavg, Row::Fedprox, Row::Heterogeneous];

    /// Key on the command line (`--only`), in `table.json` and in cell and figure names.
    pub fn key(self) -> &'static str {
        match self {
            Row::AlignFl => "align-fl",
            Row::DpRdp => "dp-rdp",
            Row::DpPld => "dp-pld",
            Row::DpDecoder => "dp-decoder",
            Row::Lcd => "lcd",
            Row::Fedavg => "fedavg",
            Row::Fedprox => "fedprox",
            Row::Heterogeneous => "heterogeneous",
        }
    }

    /// The method, as the table names it.
    pub fn label(self) -> &'static str {
        match self {
            Row::AlignFl => "ALIGN-FL, no privacy",
            Row::DpRdp => "ALIGN-FL + DP-SGD (ε = 10, RDP)",
            Row::DpPld => "ALIGN-FL + DP-SGD (ε = 10, PLD)",
            Row::DpDecoder => "ALIGN-FL + DP-SGD on the decoder only",
            Row::Lcd => "ALIGN-FL + LCD-VAE (λ_lip = 0.1)",
            Row::Fedavg => "FedAvg",
            Row::Fedprox => "FedProx (μ = 0.01)",
            Row::Heterogeneous => "ALIGN-FL, heterogeneous architectures",
        }
    }

    /// The paper's numbers for this method (DESIGN.md §2).
    pub fn paper(self) -> PaperNumbers {
        let (accuracy, f1, fid) = match self {
            Row::AlignFl => (Some(74.25), Some(74.06), None),
            Row::DpRdp | Row::DpPld => (Some(51.75), None, None),
            Row::Lcd => (Some(63.25), Some(60.01), None),
            Row::Fedavg => (Some(43.75), None, Some(148.70)),
            Row::DpDecoder | Row::Fedprox | Row::Heterogeneous => (None, None, None),
        };
        PaperNumbers { accuracy, f1, fid }
    }

    /// Whether the paper's ALIGN-FL FID range ([`PAPER_ALIGN_FID`]) covers this method.
    pub fn in_paper_fid_range(self) -> bool {
        matches!(self, Row::AlignFl | Row::DpRdp | Row::DpPld | Row::Lcd)
    }

    /// What differs from the authors' setup, in words.
    pub fn note(self) -> &'static str {
        match self {
            Row::AlignFl => "ALIGN-FL as the authors' code runs it (DESIGN.md §2).",
            Row::DpRdp => {
                "Ours clips adaptively with a privatised quantile (Andrew et al. 2021), samples Poisson batches and \
                 uploads an N(0, I) prior, so the ε holds; the authors clip at the unprivatised median and upload a GMM \
                 fitted on private latents, which no accountant covers."
            }
            Row::DpPld => {
                "As the RDP row, with σ calibrated by the tighter PLD accountant (less noise for the same ε); the \
                 paper has no PLD run."
            }
            Row::DpDecoder => {
                "The authors' dec_dp ablation, which they report fails; DESIGN.md gives no number. No (ε, δ) \
                 guarantee follows: the encoder trains without noise."
            }
            Row::Lcd => {
                "The penalty treats the interpolated latents as data, as DESIGN.md's formula reads; the authors' \
                 code lets the penalty's gradient reach the encoder through a fresh reparameterised z."
            }
            Row::Fedavg => "β = 1 as in the authors' runs.",
            Row::Fedprox => "No paper number in DESIGN.md.",
            Row::Heterogeneous => {
                "Not in the paper's table: five client architectures (latent sizes 2–8) and a sixth at the \
                 server (configs/heterogeneous.toml); only decoders and priors cross the wire."
            }
        }
    }

    /// `base` changed into this row's method at `seed`. A mechanism in `base` is dropped first, so
    /// each row runs the method its label names.
    pub fn config(self, base: &ExperimentConfig, seed: u64) -> ExperimentConfig {
        let mut cfg = base.clone();
        cfg.seed = seed;
        cfg.privacy.mechanism = Mechanism::None;
        let dp = |cfg: &mut ExperimentConfig, accountant| {
            cfg.privacy.mechanism = Mechanism::DpSgd;
            cfg.privacy.accountant = accountant;
        };
        match self {
            Row::AlignFl => {}
            Row::DpRdp => dp(&mut cfg, AccountantKind::Rdp),
            Row::DpPld => dp(&mut cfg, AccountantKind::Pld),
            Row::DpDecoder => {
                dp(&mut cfg, AccountantKind::Rdp);
                cfg.privacy.scope = GradientScope::DecoderOnly;
            }
            Row::Lcd => {
                cfg.privacy.mechanism = Mechanism::Lipschitz;
                cfg.privacy.lambda_lip = 0.1;
            }
            Row::Fedavg => cfg.strategy = StrategyKind::Fedavg,
            Row::Fedprox => cfg.strategy = StrategyKind::Fedprox,
            Row::Heterogeneous => {
                let h: ExperimentConfig = toml::from_str(HETEROGENEOUS).expect("configs/heterogeneous.toml parses");
                cfg.client_models = h.client_models;
                cfg.server.model = h.server.model;
            }
        }
        cfg
    }
}

/// Rounds of the [`Curve::Rounds`] run, whose accuracy after every round is the curve.
pub const ROUNDS_CURVE: usize = 20;

/// A curve: one setting varied, accuracy and FID against it, over the seeds of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Curve {
    /// DP-SGD's target ε, RDP accountant.
    Epsilon,
    /// DP-SGD's target ε, PLD accountant.
    EpsilonPld,
    /// LCD-VAE's λ_lip (0: no penalty).
    Lambda,
    /// Synthetic samples per client.
    Samples,
    /// Latent dimension of every client's VAE and of the server's (ALIGN-FL, no privacy).
    Latent,
    /// Latent dimension of every client's VAE and of the server's, the clients under DP-SGD at
    /// ε = 10 (RDP).
    LatentDp,
    /// Latent dimension of the server's VAE alone (ALIGN-FL, no privacy).
    ServerLatent,
    /// Latent dimension of the server's VAE alone, the clients under DP-SGD at ε = 10 (RDP).
    ServerLatentDp,
    /// Epochs of the server's training on the synthetic pool.
    ServerEpochs,
    /// Accuracy after each round of one [`ROUNDS_CURVE`]-round ALIGN-FL run.
    Rounds,
}

impl Curve {
    /// Every curve.
    pub const ALL: [Curve; 10] = [
        Curve::Epsilon,
        Curve::EpsilonPld,
        Curve::Lambda,
        Curve::Samples,
        Curve::Latent,
        Curve::LatentDp,
        Curve::ServerLatent,
        Curve::ServerLatentDp,
        Curve::ServerEpochs,
        Curve::Rounds,
    ];

    /// Key on the command line (`--only`) and in `table.json`.
    pub fn key(self) -> &'static str {
        match self {
            Curve::Epsilon => "epsilon",
            Curve::EpsilonPld => "epsilon-pld",
            Curve::Lambda => "lambda",
            Curve::Samples => "samples",
            Curve::Latent => "latent",
            Curve::LatentDp => "latent-dp",
            Curve::ServerLatent => "server-latent",
            Curve::ServerLatentDp => "server-latent-dp",
            Curve::ServerEpochs => "server-epochs",
            Curve::Rounds => "rounds",
        }
    }

    /// The values of the varied setting.
    pub fn xs(self) -> &'static [f64] {
        match self {
            Curve::Epsilon | Curve::EpsilonPld => &[0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0],
            Curve::Lambda => &[0.0, 0.01, 0.1, 1.0, 3.0, 10.0],
            Curve::Samples => &[1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 7000.0, 8000.0, 9000.0, 10000.0],
            Curve::Latent | Curve::LatentDp | Curve::ServerLatent | Curve::ServerLatentDp => &[2.0, 4.0, 8.0, 16.0],
            Curve::ServerEpochs => &[1.0, 2.0, 5.0, 10.0, 20.0],
            Curve::Rounds => &[
                1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0,
                19.0, 20.0,
            ],
        }
    }

    /// The section title in `table.md` and the x axis's name.
    pub fn title_and_axis(self) -> (&'static str, &'static str) {
        match self {
            Curve::Epsilon => ("Accuracy and FID against ε (DP-SGD, RDP)", "ε"),
            Curve::EpsilonPld => ("Accuracy and FID against ε (DP-SGD, PLD)", "ε"),
            Curve::Lambda => ("Accuracy and FID against λ_lip (LCD-VAE; λ = 0 is no penalty)", "λ_lip"),
            Curve::Samples => ("Accuracy and FID against synthetic samples per client (ALIGN-FL)", "samples"),
            Curve::Latent => (
                "Accuracy and FID against the latent dimension of the clients' and the server's VAEs (ALIGN-FL; the \
                 linear probe reads the server's latent)",
                "latent dimension",
            ),
            Curve::LatentDp => (
                "Accuracy and FID against the latent dimension of the clients' and the server's VAEs, clients under \
                 DP-SGD (ε = 10, RDP)",
                "latent dimension",
            ),
            Curve::ServerLatent => (
                "Accuracy and FID against the latent dimension of the server's VAE alone (ALIGN-FL; clients keep \
                 theirs)",
                "server latent dimension",
            ),
            Curve::ServerLatentDp => (
                "Accuracy and FID against the latent dimension of the server's VAE alone, clients under DP-SGD \
                 (ε = 10, RDP)",
                "server latent dimension",
            ),
            Curve::ServerEpochs => ("Accuracy and FID against the server's epochs (ALIGN-FL)", "server epochs"),
            Curve::Rounds => ("Accuracy after each round of a 20-round run (ALIGN-FL)", "round"),
        }
    }

    /// Whether the x axis is drawn on a log scale.
    pub fn log_x(self) -> bool {
        !matches!(self, Curve::Samples | Curve::Rounds)
    }

    /// The row whose method the point at `x` runs (λ_lip = 0 is the no-penalty row's).
    fn row(self, x: f64) -> Row {
        match self {
            Curve::Epsilon | Curve::LatentDp | Curve::ServerLatentDp => Row::DpRdp,
            Curve::EpsilonPld => Row::DpPld,
            Curve::Lambda if x != 0.0 => Row::Lcd,
            Curve::Lambda
            | Curve::Samples
            | Curve::Latent
            | Curve::ServerLatent
            | Curve::ServerEpochs
            | Curve::Rounds => Row::AlignFl,
        }
    }

    /// The cell key (`<curve key>-<x>`) and configuration of the point at `x` for `seed`: its
    /// row's method with the curve's one setting at `x` (every x of [`Curve::Rounds`] reads the
    /// same [`ROUNDS_CURVE`]-round run).
    pub fn point(self, base: &ExperimentConfig, x: f64, seed: u64) -> (String, ExperimentConfig) {
        let mut cfg = self.row(x).config(base, seed);
        let mut x = x;
        match self {
            Curve::Epsilon | Curve::EpsilonPld => cfg.privacy.epsilon = x,
            Curve::Lambda if x != 0.0 => cfg.privacy.lambda_lip = x as f32,
            Curve::Lambda => {} // λ_lip = 0 is the no-privacy row's own run, as it stands.
            Curve::Samples => cfg.server.synthetic_samples = x as usize,
            Curve::Latent | Curve::LatentDp => {
                let models =
                    std::iter::once(&mut cfg.model).chain(cfg.server.model.as_mut()).chain(&mut cfg.client_models);
                models.for_each(|m| m.latent = x as usize);
            }
            Curve::ServerLatent | Curve::ServerLatentDp => {
                let mut server = cfg.server.model.clone().unwrap_or_else(|| cfg.model.clone());
                server.latent = x as usize;
                // The clients' architecture is the default, so the row's own run is not run twice.
                cfg.server.model = (server != cfg.model).then_some(server);
            }
            Curve::ServerEpochs => cfg.server.server_epochs = x as usize,
            Curve::Rounds => {
                cfg.rounds = ROUNDS_CURVE;
                x = ROUNDS_CURVE as f64;
            }
        }
        (format!("{}-{x}", self.key()), cfg)
    }
}

/// An experiment `--only` can name: a table row or a curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Experiment {
    /// A row, over every seed.
    Row(Row),
    /// A curve, over the seeds.
    Curve(Curve),
}

impl Experiment {
    fn all() -> impl Iterator<Item = Experiment> {
        Row::ALL.into_iter().map(Experiment::Row).chain(Curve::ALL.into_iter().map(Experiment::Curve))
    }

    /// Its key.
    pub fn key(self) -> &'static str {
        match self {
            Experiment::Row(r) => r.key(),
            Experiment::Curve(c) => c.key(),
        }
    }
}

impl fmt::Display for Experiment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl FromStr for Experiment {
    type Err = String;

    fn from_str(key: &str) -> Result<Self, String> {
        Self::all().find(|e| e.key() == key).ok_or_else(|| {
            let known: Vec<&str> = Self::all().map(Experiment::key).collect();
            format!("unknown experiment {key:?}; choose from {}", known.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_and_typos_are_refused() {
        for e in Experiment::all() {
            assert_eq!(e.key().parse::<Experiment>(), Ok(e));
        }
        let e = "sample".parse::<Experiment>().unwrap_err();
        assert!(e.contains("unknown experiment \"sample\"") && e.contains("samples"), "{e}");
    }

    #[test]
    fn curve_points_keep_the_committed_cell_names() {
        let base = ExperimentConfig::default();
        let names = |c: Curve| -> Vec<String> { c.xs().iter().map(|&x| c.point(&base, x, 0).0).collect() };
        assert_eq!(
            names(Curve::Epsilon),
            ["epsilon-0.5", "epsilon-1", "epsilon-2", "epsilon-5", "epsilon-10", "epsilon-20", "epsilon-50"]
        );
        assert_eq!(
            names(Curve::Lambda),
            ["lambda-0", "lambda-0.01", "lambda-0.1", "lambda-1", "lambda-3", "lambda-10"]
        );
        assert_eq!(names(Curve::Samples)[..2], ["samples-1000", "samples-2000"]);
        assert_eq!(names(Curve::Samples).len(), 10);
        assert_eq!(Curve::Samples.point(&base, 2000.0, 0).1.server.synthetic_samples, 2000);
        let (key, pld) = Curve::EpsilonPld.point(&base, 0.5, 2);
        assert_eq!(
            (key.as_str(), pld.privacy.accountant, pld.privacy.epsilon, pld.seed),
            ("epsilon-pld-0.5", AccountantKind::Pld, 0.5, 2)
        );
        for (curve, key, mechanism) in
            [(Curve::Latent, "latent-8", Mechanism::None), (Curve::LatentDp, "latent-dp-8", Mechanism::DpSgd)]
        {
            let (k, latent) = curve.point(&base, 8.0, 1);
            assert_eq!(
                (k.as_str(), latent.model.latent, latent.seed, latent.privacy.mechanism),
                (key, 8, 1, mechanism)
            );
            assert!(latent.server.model.as_ref().is_none_or(|m| m.latent == 8));
        }
        assert_eq!(Curve::ServerEpochs.point(&base, 20.0, 0).1.server.server_epochs, 20);
        for (curve, key, mechanism) in [
            (Curve::ServerLatent, "server-latent-8", Mechanism::None),
            (Curve::ServerLatentDp, "server-latent-dp-8", Mechanism::DpSgd),
        ] {
            assert_eq!(curve.point(&base, base.model.latent as f64, 1).1.server.model, None, "the row's own run");
            let (k, cfg) = curve.point(&base, 8.0, 1);
            let server = cfg.server.model.as_ref().expect("the server gets its own architecture");
            assert_eq!(
                (k.as_str(), server.latent, cfg.model.latent, cfg.privacy.mechanism),
                (key, 8, base.model.latent, mechanism)
            );
            assert_eq!((&server.encoder, &server.decoder), (&base.model.encoder, &base.model.decoder));
        }
        let mut dp_base = base.clone();
        dp_base.privacy.mechanism = Mechanism::DpSgd;
        assert_eq!(Row::AlignFl.config(&dp_base, 0).privacy.mechanism, Mechanism::None, "a row says what it runs");
        let rounds: Vec<(String, ExperimentConfig)> =
            Curve::Rounds.xs().iter().map(|&x| Curve::Rounds.point(&base, x, 0)).collect();
        assert!(rounds.iter().all(|(k, c)| k == "rounds-20" && c.rounds == ROUNDS_CURVE && *c == rounds[0].1));
    }
}
