//! LCD-VAE's gradient penalty (Gulati et al. 2025, after Gulrajani et al. 2017) at interpolates
//! within a batch: on the decoder at interpolated latents (the paper's) or on the encoder at
//! interpolated inputs (the authors' code's alternative).

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use tensor_kernels::{Backend, TrainingOps};

use crate::{Decoder, Vae};

/// Where LCD-VAE's gradient penalty acts (the authors' `penalty_at`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum PenaltyTarget {
    /// On the decoder at interpolated latents (the paper's LCD-VAE).
    #[default]
    Decoder,
    /// On the encoder's (μ, log σ²) head at interpolated inputs.
    Encoder,
}

/// x̃ᵢ = α·xᵢ + (1 − α)·x_perm(i) for the rows of `values` (each `width` long), with a random
/// permutation of the rows and α ~ U(0, 1) per row, drawn in that order from `rng`.
fn interpolate_rows(values: &[f32], width: usize, rng: &mut ChaCha20Rng) -> Vec<f32> {
    let rows = values.len() / width;
    let mut perm: Vec<usize> = (0..rows).collect();
    perm.shuffle(rng);
    let mut mixed = vec![0.0f32; rows * width];
    for (i, row) in mixed.chunks_mut(width).enumerate() {
        let alpha: f32 = rng.gen();
        let (a, b) = (&values[i * width..(i + 1) * width], &values[perm[i] * width..(perm[i] + 1) * width]);
        row.iter_mut().zip(a.iter().zip(b)).for_each(|(t, (u, v))| *t = alpha * u + (1.0 - alpha) * v);
    }
    mixed
}

impl<B: Backend> Decoder<B> {
    /// LCD-VAE's penalty P at latents `z` (n × latent) with g = ∂(Σⱼ decoder(z)ⱼ)/∂z; adds
    /// λ·∂P/∂θ to the decoder's parameter gradients and returns P (see
    /// `Mlp::gradient_penalty`).
    pub fn penalty_at(&mut self, z: &[f32], lambda: f32) -> f64 {
        let rows = z.len() / self.spec.latent;
        let ones = vec![1.0f32; rows * self.spec.output];
        self.mlp.gradient_penalty(z, rows, &ones, lambda)
    }
}

impl<B: TrainingOps> Vae<B> {
    /// The penalty on the latents of the last batch: z̃ interpolated within the batch,
    /// g = ∂(Σⱼ decoder(z̃)ⱼ)/∂z̃, P = mean((√(‖g‖² + 1e-7) − 1)²). Adds λ·∂P/∂θ to the decoder's
    /// gradients (z̃ is treated as data: no gradient reaches the encoder) and returns P.
    pub(crate) fn decoder_penalty(&mut self, lambda: f32) -> f64 {
        let z = self.last_latents();
        let z_tilde = interpolate_rows(&z, self.config.latent, &mut self.penalty_rng);
        self.decoder.penalty_at(&z_tilde, lambda)
    }

    /// The encoder-side penalty of the authors' code (`compute_lipschitz_penalty_encoder`):
    /// x̃ interpolated within the batch `x`, g = ∂(Σⱼ μⱼ + Σⱼ log σ²ⱼ)/∂x̃,
    /// P = mean((√(‖g‖² + 1e-7) − 1)²). Adds λ·∂P/∂θ to the encoder's gradients and returns P.
    pub(crate) fn encoder_penalty(&mut self, x: &[f32], lambda: f32) -> f64 {
        let x_tilde = interpolate_rows(x, self.config.input, &mut self.penalty_rng);
        let rows = x.len() / self.config.input;
        let ones = vec![1.0f32; rows * 2 * self.config.latent];
        self.encoder.gradient_penalty(&x_tilde, rows, &ones, lambda)
    }
}
