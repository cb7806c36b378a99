//! Differential privacy for align-fl: DP-SGD for the VAE ([`DpSgd`]: Poisson sampling, ghost-norm
//! per-sample clipping, fixed / adaptive / paper-median thresholds, CSPRNG noise), privacy
//! accountants for the Poisson-subsampled Gaussian mechanism behind one [`Accountant`] trait, and
//! noise calibration.
//!
//! ```
//! use privacy::{Accountant, DpEvent, RdpAccountant};
//! let mut acc = RdpAccountant::new();
//! acc.compose(DpEvent::PoissonSampledGaussian { sampling_rate: 256.0 / 60000.0, noise_multiplier: 1.1, steps: 14063 })?;
//! let eps = acc.epsilon(1e-5)?.epsilon;
//! assert!((eps - 2.597).abs() < 0.01);
//! # Ok::<(), privacy::PrivacyError>(())
//! ```

mod calibrate;
mod dp_sgd;
mod pld;
mod rdp;

pub use calibrate::{calibrate_noise_multiplier, implausible_noise};
pub use dp_sgd::{
    AdaptiveClipping, ClippingRule, ComposedPrivacy, DpSgd, DpSgdSettings, NoiseSource, PrivacySpent, Sampling,
};
pub use pld::{PldAccountant, DEFAULT_INTERVAL};
pub use rdp::{default_orders, rdp_to_epsilon, subsampled_gaussian_rdp, RdpAccountant};

/// Errors of the privacy crate.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// A parameter outside its domain.
    #[error("{name} = {value} is invalid: {expected}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: f64,
        /// What it must be.
        expected: &'static str,
    },
    /// No noise multiplier reaches the target.
    #[error("target ε = {target} cannot be reached: {reason}")]
    Unreachable {
        /// Target ε.
        target: f64,
        /// Why.
        reason: String,
    },
    /// The PLD accountant's discretised loss distribution would exceed its memory bound even
    /// on its coarsest grid.
    #[error(
        "the PLD accountant's grid would need more than {points} points even at width {interval}: this \
         schedule's privacy loss is too spread out to account for in bounded memory; use --accountant rdp"
    )]
    GridTooLarge {
        /// Points the grid is bounded to.
        points: usize,
        /// The coarsest grid width tried.
        interval: f64,
    },
    /// δ lies below what the accountant resolves.
    #[error(
        "δ = {delta:e} is below the PLD accountant's resolution: {mass:e} of the privacy-loss probability sits at \
         +∞ (the tails it truncates), so no finite ε has so small a δ; use δ ≥ {mass:e} or --accountant rdp"
    )]
    DeltaBelowResolution {
        /// The δ asked for.
        delta: f64,
        /// The mass at +∞.
        mass: f64,
    },
}

/// A privacy-relevant event to compose.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DpEvent {
    /// `steps` applications of the Gaussian mechanism with noise multiplier σ on Poisson-sampled
    /// batches (each record included independently with probability q).
    PoissonSampledGaussian {
        /// q ∈ (0, 1].
        sampling_rate: f64,
        /// σ > 0 (noise standard deviation over the clipping norm).
        noise_multiplier: f64,
        /// Number of steps.
        steps: u64,
    },
}

impl DpEvent {
    fn validate(&self) -> Result<(), PrivacyError> {
        let DpEvent::PoissonSampledGaussian { sampling_rate: q, noise_multiplier: s, .. } = *self;
        if !(q > 0.0 && q <= 1.0) {
            return Err(PrivacyError::InvalidParameter {
                name: "sampling rate q",
                value: q,
                expected: "q must lie in (0, 1]",
            });
        }
        if !(s > 0.0 && s.is_finite()) {
            return Err(PrivacyError::InvalidParameter {
                name: "noise multiplier σ",
                value: s,
                expected: "σ must be a positive finite number",
            });
        }
        Ok(())
    }
}

/// An (ε, δ) guarantee's ε, with the RDP order that attained it (RDP only).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Epsilon {
    /// ε.
    pub epsilon: f64,
    /// The optimal Rényi order (None for PLD).
    pub order: Option<f64>,
}

/// Composes privacy events and reports ε at a given δ.
pub trait Accountant {
    /// Adds an event.
    fn compose(&mut self, event: DpEvent) -> Result<(), PrivacyError>;
    /// ε of everything composed so far at δ.
    fn epsilon(&self, delta: f64) -> Result<Epsilon, PrivacyError>;
}

/// Which accountant computes ε.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum AccountantKind {
    /// Rényi DP (dp_accounting's conversion).
    Rdp,
    /// Privacy-loss distributions (connect-the-dots discretisation, FFT composition): tighter.
    Pld,
}

impl AccountantKind {
    /// A fresh accountant of this kind.
    pub fn make(self) -> Box<dyn Accountant> {
        match self {
            AccountantKind::Rdp => Box::new(RdpAccountant::new()),
            AccountantKind::Pld => Box::new(PldAccountant::new()),
        }
    }

    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            AccountantKind::Rdp => "rdp",
            AccountantKind::Pld => "pld",
        }
    }
}

impl Accountant for Box<dyn Accountant> {
    fn compose(&mut self, event: DpEvent) -> Result<(), PrivacyError> {
        (**self).compose(event)
    }
    fn epsilon(&self, delta: f64) -> Result<Epsilon, PrivacyError> {
        (**self).epsilon(delta)
    }
}

fn check_delta(delta: f64) -> Result<(), PrivacyError> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(PrivacyError::InvalidParameter { name: "δ", value: delta, expected: "δ must lie in (0, 1)" });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
