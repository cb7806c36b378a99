//! Evaluation for align-fl: the linear probe on the global encoder's means (accuracy, weighted
//! F1), the decoder Lipschitz estimates (gradient norm, spectral-norm bound, pairwise ratio),
//! the outlier analysis, PNG figures, and FID on the FID graph's Inception v3 features.
//!
//! ```
//! let labels: Vec<u8> = (0..100).map(|i| (i % 2) as u8).collect();
//! let features: Vec<f32> = labels.iter().map(|&l| if l == 0 { -1.0 } else { 1.0 }).collect();
//! let score = metrics::linear_probe(&features, 1, &labels, 0)?;
//! assert_eq!(score.accuracy, 1.0);
//! # Ok::<(), metrics::MetricsError>(())
//! ```

mod chart;
mod decoder_fid;
mod fid;
mod figures;
mod inception;
mod inception_import;
mod outliers;
mod probe;
mod vector_figures;

pub use chart::{line_charts, Chart, ChartPoint, Series};
pub use decoder_fid::{verify_inception_weights, FeatureProgress, FidScorer};
pub use fid::{encode_feature_stats, frechet_distance, FeatureStats};
pub use figures::{latent_scatter, project_2d, sample_grid, PALETTE};
pub use inception::{
    locate_inception_weights, models_cache_dir, Inception, Tap, FEATURE_DIM, INCEPTION_FILE, INCEPTION_SHA256,
    INPUT_SIZE, MAX_INCEPTION_BYTES,
};
pub use inception_import::{
    convert_pytorch_fid, convert_pytorch_fid_entries, inception_safetensors, pytorch_fid_module, NamedTensor,
    PytorchCheckpoint, PYTORCH_FID_SHA256_PREFIX, PYTORCH_FID_URL,
};
pub use outliers::{nearest_squared_distances, outlier_stats, OutlierStats};
pub use probe::{linear_probe, stratified_split, weighted_f1, ProbeScore};
pub use vector_figures::{latent_scatter_svg, line_charts_svg};

use tensor_kernels::Backend;
use vae::Decoder;

/// Errors of the metrics crate.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Inputs of inconsistent sizes.
    #[error("metrics input: {0}")]
    Shape(String),
    /// Inception weights missing, unreadable or of the wrong architecture.
    #[error("Inception weights: {0}")]
    Weights(String),
    /// NaN or infinity in the inputs.
    #[error("non-finite input: {0}")]
    NonFinite(String),
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

/// Largest singular value of an out × in matrix (row-major) by power iteration on WᵀW, in f64.
pub fn spectral_norm(weight: &[f32], out_dim: usize, in_dim: usize) -> f64 {
    let w: Vec<f64> = weight.iter().map(|&v| f64::from(v)).collect();
    let mut v = vec![1.0 / (in_dim as f64).sqrt(); in_dim];
    let mut sigma = 0.0;
    for _ in 0..500 {
        let u: Vec<f64> = (0..out_dim).map(|r| (0..in_dim).map(|c| w[r * in_dim + c] * v[c]).sum()).collect();
        let mut next = vec![0.0; in_dim];
        for (r, ur) in u.iter().enumerate() {
            for c in 0..in_dim {
                next[c] += w[r * in_dim + c] * ur;
            }
        }
        let norm = next.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        let new_sigma = norm.sqrt();
        next.iter_mut().for_each(|x| *x /= norm);
        v = next;
        if (new_sigma - sigma).abs() <= 1e-10 * new_sigma {
            return new_sigma;
        }
        sigma = new_sigma;
    }
    sigma
}

/// Π‖Wₗ‖₂ over the decoder's weight matrices: an upper bound on the Lipschitz constant of the
/// decoder's pre-sigmoid output (the sigmoid multiplies it by at most ¼).
pub fn spectral_norm_product(layers: &[vae::LayerWeights]) -> f64 {
    layers.iter().map(|l| spectral_norm(&l.weight, l.out_dim, l.in_dim)).product()
}

/// The largest ‖f(z) − f(z′)‖ / ‖z − z′‖ over pairs z′ = z + r·u, for each latent z of `z`
/// (n × latent) and a random unit direction u (seeded), at distance `radius`.
pub fn pairwise_lipschitz<B: Backend>(decoder: &mut Decoder<B>, z: &[f32], radius: f32, seed: u64) -> f64 {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let d = decoder.spec().latent;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let mut moved = z.to_vec();
    for row in moved.chunks_mut(d) {
        let u: Vec<f32> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
        let norm = u.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().zip(&u).for_each(|(x, ui)| *x += radius * ui / norm);
    }
    let (a, b) = (decoder.decode(z), decoder.decode(&moved));
    let out = decoder.spec().output;
    a.chunks(out)
        .zip(b.chunks(out))
        .map(|(p, q)| p.iter().zip(q).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>().sqrt() / f64::from(radius))
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

    #[test]
    fn spectral_norms_of_known_matrices() {
        // diag(3, 2) padded to 2 × 3: σ_max = 3; a rank-one uvᵀ has σ = ‖u‖‖v‖.
        assert!((spectral_norm(&[3.0, 0.0, 0.0, 0.0, 2.0, 0.0], 2, 3) - 3.0).abs() < 1e-8);
        let rank_one = [1.0, 2.0, 2.0, 2.0, 4.0, 4.0]; // (1, 2)ᵀ (1, 2, 2)
        assert!((spectral_norm(&rank_one, 2, 3) - 5f64.sqrt() * 3.0).abs() < 1e-8);
        let layer = |w: Vec<f32>, i, o| LayerWeights { in_dim: i, out_dim: o, weight: w, bias: vec![0.0; o] };
        let prod = spectral_norm_product(&[layer(vec![2.0, 0.0, 0.0, 1.0], 2, 2), layer(vec![0.5, 0.0], 2, 1)]);
        assert!((prod - 1.0).abs() < 1e-8);
    }

    #[test]
    fn pairwise_ratio_of_a_linear_decoder_is_its_slope() {
        // Identity activation is not available at the output (sigmoid), so compare with the
        // derivative bound: the ratio never exceeds ¼·‖W‖ and approaches it near the origin.
        let spec = DecoderSpec { latent: 1, hidden: vec![], output: 1 };
        let w = LayerWeights { in_dim: 1, out_dim: 1, weight: vec![4.0], bias: vec![0.0] };
        let mut dec = Decoder::from_weights(&Cpu::new(), &spec, &[w]).unwrap();
        let r = pairwise_lipschitz(&mut dec, &[0.0, 0.5, -1.0], 1e-3, 0);
        assert!(r <= 1.0 + 1e-3 && r > 0.99, "{r}");
    }
}
