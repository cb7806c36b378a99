//! The loss of a step, term by term, and its sample-weighted mean over an epoch.

use serde::{Deserialize, Serialize};

/// Loss of one step (or the sample-weighted mean over an epoch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Loss {
    /// Σ_pixels squared error, averaged over the batch.
    pub reconstruction: f64,
    /// KL averaged over batch and latent dims.
    pub kl: f64,
    /// LCD-VAE's gradient penalty P (0 when off).
    pub penalty: f64,
    /// reconstruction + β · kl + λ_lip · penalty.
    pub total: f64,
}

impl Loss {
    /// Adds `weight` times `other`, term by term (for sample-weighted epoch means).
    pub fn add_weighted(&mut self, other: &Loss, weight: f64) {
        self.reconstruction += weight * other.reconstruction;
        self.kl += weight * other.kl;
        self.penalty += weight * other.penalty;
        self.total += weight * other.total;
    }

    /// Every term divided by `n`.
    pub fn divided(self, n: f64) -> Loss {
        Loss {
            reconstruction: self.reconstruction / n,
            kl: self.kl / n,
            penalty: self.penalty / n,
            total: self.total / n,
        }
    }
}
