//! Evaluation for align-fl: the linear probe on the global encoder's means (accuracy, weighted
//! F1), the decoder Lipschitz estimate, and PNG figures.
//!
//! ```
//! let labels: Vec<u8> = (0..100).map(|i| (i % 2) as u8).collect();
//! let features: Vec<f32> = labels.iter().map(|&l| if l == 0 { -1.0 } else { 1.0 }).collect();
//! let score = metrics::linear_probe(&features, 1, &labels, 0)?;
//! assert_eq!(score.accuracy, 1.0);
//! # Ok::<(), metrics::MetricsError>(())
//! ```

mod figures;
mod probe;

pub use figures::{latent_scatter, project_2d, sample_grid, PALETTE};
pub use probe::{linear_probe, stratified_split, weighted_f1, ProbeScore};

use tensor_kernels::Backend;
use vae::Decoder;

/// Errors of the metrics crate.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Inputs of inconsistent sizes.
    #[error("metrics input: {0}")]
    Shape(String),
    /// NaN or infinity in the inputs.
    #[error("non-finite input: {0}")]
    NonFinite(String),
    /// A figure could not be written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// The ALIGN-FL decoder Lipschitz estimate: maxᵢ ‖∂(Σⱼ decoder(zᵢ)ⱼ)/∂zᵢ‖ over the latents
/// `z` (n × latent), typically the encoder means of the evaluation set.
pub fn decoder_lipschitz<B: Backend>(decoder: &mut Decoder<B>, z: &[f32]) -> f64 {
    let d = decoder.spec().latent;
    decoder
        .output_sum_gradient(z)
        .chunks(d)
        .map(|g| g.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt())
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor_kernels::Cpu;
    use vae::{DecoderSpec, LayerWeights};

    #[test]
    fn lipschitz_of_a_known_decoder() {
        // One linear layer 2 → 1 then sigmoid: g(z) = σ′(w·z + b) w; at z = 0 with b = 0, σ′ = ¼.
        let spec = DecoderSpec { latent: 2, hidden: vec![], output: 1 };
        let w = LayerWeights { in_dim: 2, out_dim: 1, weight: vec![3.0, 4.0], bias: vec![0.0] };
        let mut dec = Decoder::from_weights(&Cpu::new(), &spec, &[w]).unwrap();
        let l = decoder_lipschitz(&mut dec, &[0.0, 0.0, 1.0, 1.0]);
        assert!((l - 1.25).abs() < 1e-6, "{l}");
    }
}
