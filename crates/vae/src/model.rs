//! The VAE (Kingma & Welling 2014) and its decoder, with the ALIGN-FL reference loss:
//! Σ_pixels (x̂ − x)² averaged over the batch, plus β · KL where KL = −½ · mean over batch and
//! latent dims of (1 + log σ² − μ² − σ²); and the per-sample gradient norms and clipped sums of
//! DP-SGD.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use tensor_kernels::{Activation, Backend, LatentShape, NoiseKey, TrainingOps};

use crate::mlp::{check_layers, LayerWeights, Mlp};
use crate::{DecoderSpec, Loss, Param, VaeConfig, VaeError};

/// Rows processed at once when encoding or decoding many samples.
const CHUNK_ROWS: usize = 5000;

fn activations(layers: usize, last: Activation) -> Vec<Activation> {
    let mut acts = vec![Activation::Relu; layers];
    acts[layers - 1] = last;
    acts
}

/// A decoder z → image (ReLU hidden layers, sigmoid output).
pub struct Decoder<B: Backend> {
    pub(crate) spec: DecoderSpec,
    pub(crate) mlp: Mlp<B>,
    latents: B::Buffer,
}

impl<B: Backend> Decoder<B> {
    /// Builds a decoder from host weights, checking them against `spec`.
    pub fn from_weights(backend: &B, spec: &DecoderSpec, weights: &[LayerWeights]) -> Result<Self, VaeError> {
        spec.check_weights(weights)?;
        let mlp = Mlp::from_weights(backend, weights, activations(weights.len(), Activation::Sigmoid));
        Ok(Decoder { spec: spec.clone(), mlp, latents: backend.zeros(0) })
    }

    /// The architecture.
    pub fn spec(&self) -> &DecoderSpec {
        &self.spec
    }

    /// Host copy of the weights.
    pub fn weights(&self) -> Vec<LayerWeights> {
        self.mlp.weights()
    }

    fn upload_latents(&mut self, z: &[f32]) {
        let b = self.mlp.backend();
        if b.len(&self.latents) < z.len() {
            self.latents = b.zeros(z.len());
        }
        b.write(&mut self.latents, z);
    }

    /// Decodes `z` (n × latent) into n × output values in [0, 1].
    pub fn decode(&mut self, z: &[f32]) -> Vec<f32> {
        let d = self.spec.latent;
        let o = self.spec.output;
        let mut out = vec![0.0; z.len() / d * o];
        for (chunk, dst) in z.chunks(CHUNK_ROWS * d).zip(out.chunks_mut(CHUNK_ROWS * o)) {
            self.upload_latents(chunk);
            self.mlp.forward(&self.latents, chunk.len() / d);
            self.mlp.backend().read(self.mlp.output(), dst);
        }
        out
    }

    /// g(z) = ∂(Σⱼ decoder(z)ⱼ)/∂z for each row of `z` (n × latent): the quantity whose norm the
    /// ALIGN-FL Lipschitz estimate and gradient penalty use.
    pub fn output_sum_gradient(&mut self, z: &[f32]) -> Vec<f32> {
        let d = self.spec.latent;
        let mut out = vec![0.0; z.len()];
        let mut grad = self.mlp.backend().zeros(CHUNK_ROWS.min(z.len() / d.max(1)).max(1) * d);
        for (chunk, dst) in z.chunks(CHUNK_ROWS * d).zip(out.chunks_mut(CHUNK_ROWS * d)) {
            let rows = chunk.len() / d;
            self.upload_latents(chunk);
            self.mlp.forward(&self.latents, rows);
            let ones = vec![1.0; rows * self.spec.output];
            let b = self.mlp.backend().clone();
            b.write(self.mlp.output_and_grad().1, &ones);
            self.mlp.backward(&self.latents, rows, false, Some(&mut grad));
            b.read(&grad, dst);
        }
        out
    }
}

impl<B: Backend> Decoder<B> {
    /// Sets the decoder's parameter gradients to zero.
    pub fn zero_gradients(&mut self) {
        let b = self.mlp.backend().clone();
        self.params().for_each(|p| b.write(p.grad, &vec![0.0; p.len]));
    }

    /// Every decoder parameter with its gradient.
    pub fn params(&mut self) -> impl Iterator<Item = Param<'_, B>> {
        self.mlp.params()
    }
}

/// Host copy of a whole VAE's weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaeWeights {
    /// Encoder layers, the last being the [μ | log σ²] head.
    pub encoder: Vec<LayerWeights>,
    /// Decoder layers.
    pub decoder: Vec<LayerWeights>,
}

impl VaeWeights {
    /// Fresh weights with PyTorch's default initialisation.
    pub fn init(config: &VaeConfig, rng: &mut impl Rng) -> Self {
        VaeWeights {
            encoder: config.encoder_dims().iter().map(|&(i, o)| LayerWeights::init(i, o, rng)).collect(),
            decoder: config.decoder_spec().dims().iter().map(|&(i, o)| LayerWeights::init(i, o, rng)).collect(),
        }
    }

    /// Checks every layer against `config`.
    pub fn check(&self, config: &VaeConfig) -> Result<(), VaeError> {
        check_layers("encoder", &self.encoder, &config.encoder_dims())?;
        check_layers("decoder", &self.decoder, &config.decoder_spec().dims())
    }

    /// Every layer, encoder first.
    pub fn layers(&self) -> impl Iterator<Item = &LayerWeights> {
        self.encoder.iter().chain(&self.decoder)
    }

    /// Every layer, mutably, encoder first.
    pub fn layers_mut(&mut self) -> impl Iterator<Item = &mut LayerWeights> {
        self.encoder.iter_mut().chain(&mut self.decoder)
    }
}

/// Which parameters get per-sample clipped gradients and noise (DP-SGD's scope).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum GradientScope {
    /// Every layer of the VAE (the paper's DP-SGD).
    #[default]
    WholeModel,
    /// Only the decoder (the authors' `dec_dp` ablation); the encoder takes plain mean-gradient
    /// steps, so no (ε, δ) guarantee follows for the decoder.
    DecoderOnly,
}

/// How a batch's loss gradient is reduced.
#[derive(Clone, Copy)]
enum Reduction {
    /// Gradient of the batch mean loss into the parameter gradients.
    Mean,
    /// Per-row losses; only the per-layer deltas are kept (for per-sample clipping).
    PerSample,
}

/// What [`Vae::training_state`] captures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VaeState {
    /// All weights.
    pub weights: VaeWeights,
    noise: NoiseKey,
    penalty_rng: ChaCha20Rng,
    steps: u64,
}

/// An MLP VAE on backend `B`.
pub struct Vae<B: TrainingOps> {
    backend: B,
    pub(crate) config: VaeConfig,
    pub(crate) encoder: Mlp<B>,
    pub(crate) decoder: Decoder<B>,
    input: B::Buffer,
    eps: B::Buffer,
    z: B::Buffer,
    grad_z: B::Buffer,
    /// ‖∇θ ℓᵢ‖² of the last [`Vae::per_sample_gradient_norms`] batch, on the device.
    squared_norms: B::Buffer,
    capacity: usize,
    pub(crate) noise: NoiseKey,
    pub(crate) penalty_rng: ChaCha20Rng,
    last_rows: usize,
    steps: u64,
}

impl<B: TrainingOps> Vae<B> {
    /// A freshly initialised VAE; `seed` fixes the initial weights and the reparameterisation
    /// noise stream.
    pub fn new(backend: &B, config: &VaeConfig, seed: u64) -> Result<Self, VaeError> {
        config.validate()?;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        Self::from_weights(backend, config, &VaeWeights::init(config, &mut rng), seed)
    }

    /// A VAE holding `weights` (checked against `config`); `noise_seed` fixes the
    /// reparameterisation noise stream.
    pub fn from_weights(
        backend: &B,
        config: &VaeConfig,
        weights: &VaeWeights,
        noise_seed: u64,
    ) -> Result<Self, VaeError> {
        config.validate()?;
        weights.check(config)?;
        let encoder =
            Mlp::from_weights(backend, &weights.encoder, activations(weights.encoder.len(), Activation::Identity));
        let decoder = Decoder::from_weights(backend, &config.decoder_spec(), &weights.decoder)?;
        Ok(Vae {
            backend: backend.clone(),
            config: config.clone(),
            encoder,
            decoder,
            input: backend.zeros(0),
            eps: backend.zeros(0),
            z: backend.zeros(0),
            grad_z: backend.zeros(0),
            squared_norms: backend.zeros(0),
            capacity: 0,
            noise: NoiseKey::from_u64(noise_seed, 1),
            penalty_rng: {
                let mut rng = ChaCha20Rng::seed_from_u64(noise_seed);
                rng.set_stream(2);
                rng
            },
            last_rows: 0,
            steps: 0,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Optimiser steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The decoder.
    pub fn decoder(&mut self) -> &mut Decoder<B> {
        &mut self.decoder
    }

    /// Host copy of all weights.
    pub fn weights(&self) -> VaeWeights {
        VaeWeights { encoder: self.encoder.weights(), decoder: self.decoder.mlp.weights() }
    }

    /// Replaces all weights (checked against the architecture).
    pub fn set_weights(&mut self, weights: &VaeWeights) -> Result<(), VaeError> {
        weights.check(&self.config)?;
        self.encoder.set_weights(&weights.encoder);
        self.decoder.mlp.set_weights(&weights.decoder);
        Ok(())
    }

    /// Everything training carries from one call to the next: the weights and the random streams
    /// (reparameterisation noise, penalty interpolation) with the step count. A model restored
    /// from it trains on exactly as this one would (Adam's moments are not part of it: callers
    /// start a fresh [`crate::Adam`] per round).
    pub fn training_state(&self) -> VaeState {
        VaeState {
            weights: self.weights(),
            noise: self.noise,
            penalty_rng: self.penalty_rng.clone(),
            steps: self.steps,
        }
    }

    /// Continues from a [`Vae::training_state`] (weights checked against the architecture).
    pub fn restore(&mut self, state: &VaeState) -> Result<(), VaeError> {
        self.set_weights(&state.weights)?;
        self.noise = state.noise;
        self.penalty_rng = state.penalty_rng.clone();
        self.steps = state.steps;
        Ok(())
    }

    /// Every parameter with its gradient, encoder first.
    pub fn params(&mut self) -> impl Iterator<Item = Param<'_, B>> {
        self.encoder.params().chain(self.decoder.mlp.params())
    }

    /// Number of the encoder's parameter tensors (the first of [`Vae::params`]).
    pub(crate) fn encoder_tensors(&mut self) -> usize {
        self.encoder.params().count()
    }

    /// Counts one optimiser step; returns the new count.
    pub(crate) fn count_step(&mut self) -> u64 {
        self.steps += 1;
        self.steps
    }

    /// The latents z sampled for the last batch (rows × latent), on the host.
    pub(crate) fn last_latents(&self) -> Vec<f32> {
        let mut z = vec![0.0f32; self.last_rows * self.config.latent];
        self.backend.read(&self.z, &mut z);
        z
    }

    fn ensure_capacity(&mut self, rows: usize) {
        if rows > self.capacity {
            let b = &self.backend;
            self.input = b.zeros(rows * self.config.input);
            self.eps = b.zeros(rows * self.config.latent);
            self.z = b.zeros(rows * self.config.latent);
            self.grad_z = b.zeros(rows * self.config.latent);
            self.capacity = rows;
        }
    }

    /// Forward and backward pass on one batch (`x`: rows × input, host memory), leaving the
    /// gradients of the reference loss in the parameter gradients. When `latents` is given, the
    /// sampled z of every row is appended to it.
    pub fn forward_backward(&mut self, x: &[f32], kl_weight: f32, latents: Option<&mut Vec<f32>>) -> Loss {
        self.run_batch(x, kl_weight, Reduction::Mean, latents)
    }

    /// Forward and backward pass for per-sample clipping (DP-SGD). Sample i's loss is
    /// ℓᵢ = Σ_p (x̂ᵢₚ − xᵢₚ)² + (β/d) Σⱼ KLᵢⱼ, so the reference batch loss is the mean of the ℓᵢ.
    /// Returns the batch loss and ‖∇θ ℓᵢ‖² over the parameters in `scope` for every sample,
    /// computed without per-sample gradients from each layer's ‖δᵢ‖²(‖aᵢ‖² + 1) (Goodfellow 2015;
    /// Lee & Kifer 2021). No parameter gradient is written: follow with
    /// [`Vae::clipped_gradient_sum`].
    pub fn per_sample_gradient_norms(
        &mut self,
        x: &[f32],
        kl_weight: f32,
        scope: GradientScope,
        latents: Option<&mut Vec<f32>>,
    ) -> (Loss, Vec<f64>) {
        let loss = self.run_batch(x, kl_weight, Reduction::PerSample, latents);
        let rows = x.len() / self.config.input;
        self.squared_norms = self.backend.zeros(rows);
        if scope == GradientScope::WholeModel {
            self.encoder.add_per_sample_squared_norms(&self.input, rows, &mut self.squared_norms);
        }
        self.decoder.mlp.add_per_sample_squared_norms(&self.z, rows, &mut self.squared_norms);
        let mut norms = vec![0.0f32; rows];
        self.backend.read(&self.squared_norms, &mut norms);
        (loss, norms.into_iter().map(f64::from).collect())
    }

    /// After [`Vae::per_sample_gradient_norms`] on a batch of n rows, on the device: the clip
    /// factors fᵢ = min(1, C / (‖∇θ ℓᵢ‖ + 10⁻⁶)) and the gradients of the parameters in `scope`
    /// ← Σᵢ fᵢ · ∇θ ℓᵢ, one fused kernel per layer (Abadi et al. 2016, Alg. 1); parameters
    /// outside it get the plain batch mean (1/n) Σᵢ ∇θ ℓᵢ.
    pub fn clipped_gradient_sum(&mut self, clip_norm: f64, scope: GradientScope) {
        let b = &self.backend;
        let rows = b.len(&self.squared_norms);
        let mut factors = b.zeros(rows);
        b.clip_factors(&self.squared_norms, rows, clip_norm, &mut factors);
        match scope {
            GradientScope::WholeModel => self.encoder.clipped_param_grads(&self.input, rows, &factors),
            GradientScope::DecoderOnly => {
                let mean = b.upload(&vec![1.0 / rows as f32; rows]);
                self.encoder.clipped_param_grads(&self.input, rows, &mean);
            }
        }
        self.decoder.mlp.clipped_param_grads(&self.z, rows, &factors);
    }

    fn run_batch(&mut self, x: &[f32], kl_weight: f32, reduction: Reduction, latents: Option<&mut Vec<f32>>) -> Loss {
        let (input_dim, d) = (self.config.input, self.config.latent);
        let rows = x.len() / input_dim;
        self.ensure_capacity(rows);
        let b = self.backend.clone();
        b.write(&mut self.input, x);
        self.encoder.forward(&self.input, rows);
        b.fill_standard_normal(&mut self.eps, rows * d, self.noise);
        self.noise.offset += (rows * d) as u64;
        b.reparameterize(self.encoder.output(), &self.eps, &mut self.z, LatentShape { rows, latent: d });
        if let Some(l) = latents {
            let start = l.len();
            l.resize(start + rows * d, 0.0);
            b.read(&self.z, &mut l[start..]);
        }
        // Mean: the batch loss. PerSample: each row's own loss ℓᵢ (the batch loss times n).
        let (per_row, param_grads) = match reduction {
            Reduction::Mean => (1.0 / rows as f32, true),
            Reduction::PerSample => (1.0, false),
        };
        self.decoder.mlp.forward(&self.z, rows);
        let (x_hat, grad) = self.decoder.mlp.output_and_grad();
        let squared = b.squared_error(x_hat, &self.input, grad, rows * input_dim, per_row);
        self.decoder.mlp.backward(&self.z, rows, param_grads, Some(&mut self.grad_z));
        let (head, grad_head) = self.encoder.output_and_grad();
        let kl_sum = b.reparameterize_backward(
            head,
            &self.eps,
            &self.grad_z,
            grad_head,
            LatentShape { rows, latent: d },
            per_row * kl_weight / d as f32,
        );
        self.encoder.backward(&self.input, rows, param_grads, None);
        self.last_rows = rows;
        let reconstruction = squared / rows as f64;
        let kl = kl_sum / (rows * d) as f64;
        Loss { reconstruction, kl, penalty: 0.0, total: reconstruction + f64::from(kl_weight) * kl }
    }

    /// Sets every parameter gradient to zero (a DP-SGD step on an empty Poisson batch).
    pub fn zero_gradients(&mut self) {
        let b = self.backend.clone();
        self.params().for_each(|p| b.write(p.grad, &vec![0.0; p.len]));
    }

    /// The encoder's mean μ for each row of `x` (n × input): n × latent values.
    pub fn encode_mean(&mut self, x: &[f32]) -> Vec<f32> {
        let (input, d) = (self.config.input, self.config.latent);
        let mut out = Vec::with_capacity(x.len() / input * d);
        for chunk in x.chunks(CHUNK_ROWS * input) {
            let rows = chunk.len() / input;
            self.ensure_capacity(rows);
            self.backend.write(&mut self.input, chunk);
            self.encoder.forward(&self.input, rows);
            let mut head = vec![0.0; rows * 2 * d];
            self.backend.read(self.encoder.output(), &mut head);
            for r in 0..rows {
                out.extend_from_slice(&head[r * 2 * d..r * 2 * d + d]);
            }
        }
        out
    }
}
