//! Errors of the vae crate.

/// What can go wrong building, loading or training a VAE.
#[derive(Debug, thiserror::Error)]
pub enum VaeError {
    /// An architecture that cannot work.
    #[error("invalid VAE architecture: {0}")]
    Config(String),
    /// Weights whose shapes do not match the architecture they claim.
    #[error("weights do not match the architecture: {0}")]
    ShapeMismatch(String),
    /// A loss or parameter became NaN or infinite.
    #[error("training diverged: {what} became non-finite at step {step} (try a lower learning rate)")]
    NonFinite {
        /// Which quantity.
        what: &'static str,
        /// Optimiser step at which it happened.
        step: u64,
    },
    /// A checkpoint file could not be read or written.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A prior that cannot be fitted or sampled.
    #[error("latent prior: {0}")]
    Prior(String),
}
