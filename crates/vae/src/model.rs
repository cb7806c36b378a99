//! The VAE (Kingma & Welling 2014) with the ALIGN-FL reference loss: Σ_pixels (x̂ − x)² averaged
//! over the batch, plus β · KL where KL = −½ · mean over batch and latent dims of
//! (1 + log σ² − μ² − σ²).

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use tensor_kernels::{Activation, AdamStep, Backend, GradientNoise, NoiseKey};

use crate::mlp::{check_layers, LayerWeights, Mlp};
use crate::{DecoderSpec, VaeConfig, VaeError};

/// Rows processed at once when encoding or decoding many samples.
const CHUNK_ROWS: usize = 5000;

fn activations(layers: usize, last: Activation) -> Vec<Activation> {
    let mut acts = vec![Activation::Relu; layers];
    acts[layers - 1] = last;
    acts
}

/// A decoder z → image (ReLU hidden layers, sigmoid output).
pub struct Decoder<B: Backend> {
    spec: DecoderSpec,
    mlp: Mlp<B>,
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
    /// LCD-VAE's penalty P at latents `z` (n × latent) with g = ∂(Σⱼ decoder(z)ⱼ)/∂z; adds
    /// λ·∂P/∂θ to the decoder's parameter gradients and returns P (see
    /// `Mlp::gradient_penalty`).
    pub fn penalty_at(&mut self, z: &[f32], lambda: f32) -> f64 {
        let rows = z.len() / self.spec.latent;
        let ones = vec![1.0f32; rows * self.spec.output];
        self.mlp.gradient_penalty(z, rows, &ones, lambda)
    }

    /// Sets the decoder's parameter gradients to zero.
    pub fn zero_gradients(&mut self) {
        let b = self.mlp.backend().clone();
        self.mlp.for_each_param(|_, g, len| b.write(g, &vec![0.0; len]));
    }

    /// Visits (parameter, gradient, length) of every decoder parameter.
    pub fn for_each_param(&mut self, f: impl FnMut(&mut B::Buffer, &mut B::Buffer, usize)) {
        self.mlp.for_each_param(f);
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

/// Optimiser settings of local training.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainOptions {
    /// Mini-batch size.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f32,
    /// β, the weight of the KL term.
    pub kl_weight: f32,
    /// λ_lip, the weight of LCD-VAE's gradient penalty (0: off).
    pub lipschitz_penalty: f32,
    /// Which network the penalty constrains.
    pub penalty_on: PenaltyTarget,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            batch_size: 128,
            learning_rate: 1e-3,
            kl_weight: 0.1,
            lipschitz_penalty: 0.0,
            penalty_on: PenaltyTarget::Decoder,
        }
    }
}

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

/// Adam state for one model (moments per parameter, step count).
pub struct Adam<B: Backend> {
    learning_rate: f32,
    m: Vec<B::Buffer>,
    v: Vec<B::Buffer>,
    t: u64,
    /// Parameter tensors of the encoder (they come first in [`Vae::for_each_param`] order).
    encoder_tensors: usize,
}

impl<B: Backend> Adam<B> {
    /// Fresh state (zero moments) for `vae`.
    pub fn new(vae: &mut Vae<B>, learning_rate: f32) -> Self {
        let b = vae.backend.clone();
        let (mut m, mut v) = (Vec::new(), Vec::new());
        vae.for_each_param(|_, _, len| {
            m.push(b.zeros(len));
            v.push(b.zeros(len));
        });
        let mut encoder_tensors = 0;
        vae.encoder.for_each_param(|_, _, _| encoder_tensors += 1);
        Adam { learning_rate, m, v, t: 0, encoder_tensors }
    }

    /// Applies one update from the gradients currently held by `vae`.
    pub fn step(&mut self, vae: &mut Vae<B>) {
        self.update(vae, None, 0);
    }

    /// Applies one update from scale · (gradient + std · z) on the parameters in `scope`, z the
    /// noise stream `key` laid over them in [`Vae::for_each_param`] order (DP-SGD's noised mean
    /// gradient); parameters outside the scope step on their gradient as it is. Returns the
    /// stream position after the last noised parameter.
    pub fn noisy_step(&mut self, vae: &mut Vae<B>, std: f32, scale: f32, key: NoiseKey, scope: GradientScope) -> NoiseKey {
        let first_noised = match scope {
            GradientScope::WholeModel => 0,
            GradientScope::DecoderOnly => self.encoder_tensors,
        };
        self.update(vae, Some(GradientNoise { std, scale, key }), first_noised).expect("noise was given")
    }

    /// The update, noising tensors from `first_noised` on; returns the noise stream's position
    /// after the last parameter, if noised.
    fn update(&mut self, vae: &mut Vae<B>, mut noise: Option<GradientNoise>, first_noised: usize) -> Option<NoiseKey> {
        self.t += 1;
        let b = vae.backend.clone();
        let step = AdamStep::new(self.learning_rate, self.t);
        let (m, v) = (&mut self.m, &mut self.v);
        let mut i = 0;
        vae.for_each_param(|p, g, len| {
            let noised = noise.filter(|_| i >= first_noised);
            b.adam(p, g, &mut m[i], &mut v[i], len, step, noised);
            if let (Some(n), true) = (&mut noise, noised.is_some()) {
                n.key.offset += len as u64;
            }
            i += 1;
        });
        noise.map(|n| n.key)
    }
}

/// A copy of reference parameters for FedProx's proximal term μ/2 ‖w − w_ref‖² (Li et al. 2020).
pub struct ProximalAnchor<B: Backend> {
    params: Vec<B::Buffer>,
    mu: f32,
}

impl<B: Backend> ProximalAnchor<B> {
    /// Anchors at the current parameters of `vae`.
    pub fn new(vae: &mut Vae<B>, mu: f32) -> Self {
        let b = vae.backend.clone();
        let mut params = Vec::new();
        vae.for_each_param(|p, _, len| {
            let mut copy = b.zeros(len);
            b.copy(p, &mut copy, len);
            params.push(copy);
        });
        ProximalAnchor { params, mu }
    }

    /// grad += μ (w − w_ref) for every parameter.
    fn apply(&self, vae: &mut Vae<B>) {
        let b = vae.backend.clone();
        let mut i = 0;
        vae.for_each_param(|p, g, len| {
            b.axpy(self.mu, p, g, len);
            b.axpy(-self.mu, &self.params[i], g, len);
            i += 1;
        });
    }
}

/// How a batch's loss gradient is reduced.
#[derive(Clone, Copy)]
enum Reduction {
    /// Gradient of the batch mean loss into the parameter gradients.
    Mean,
    /// Per-row losses; only the per-layer deltas are kept (for per-sample clipping).
    PerSample,
}

/// An MLP VAE on backend `B`.
pub struct Vae<B: Backend> {
    backend: B,
    config: VaeConfig,
    encoder: Mlp<B>,
    decoder: Decoder<B>,
    input: B::Buffer,
    eps: B::Buffer,
    z: B::Buffer,
    grad_z: B::Buffer,
    /// ‖∇θ ℓᵢ‖² of the last [`Vae::per_sample_gradient_norms`] batch, on the device.
    squared_norms: B::Buffer,
    capacity: usize,
    pub(crate) noise: NoiseKey,
    penalty_rng: ChaCha20Rng,
    last_rows: usize,
    steps: u64,
}

impl<B: Backend> Vae<B> {
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

    /// Visits (parameter, gradient, length) of every parameter, encoder first.
    pub fn for_each_param(&mut self, mut f: impl FnMut(&mut B::Buffer, &mut B::Buffer, usize)) {
        self.encoder.for_each_param(&mut f);
        self.decoder.mlp.for_each_param(&mut f);
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
        b.reparameterize(self.encoder.output(), &self.eps, &mut self.z, rows, d);
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
            rows,
            d,
            per_row * kl_weight / d as f32,
        );
        self.encoder.backward(&self.input, rows, param_grads, None);
        self.last_rows = rows;
        let reconstruction = squared / rows as f64;
        let kl = kl_sum / (rows * d) as f64;
        Loss { reconstruction, kl, penalty: 0.0, total: reconstruction + f64::from(kl_weight) * kl }
    }

    /// LCD-VAE's penalty on the latents of the last batch (Gulati et al. 2025, after Gulrajani et
    /// al. 2017): z̃ = α·z + (1 − α)·z[perm] with α ~ U(0, 1) per sample and a random permutation
    /// of the batch; g = ∂(Σⱼ decoder(z̃)ⱼ)/∂z̃; P = mean((√(‖g‖² + 1e-7) − 1)²). Adds λ·∂P/∂θ to
    /// the decoder's gradients (z̃ is treated as data: no gradient reaches the encoder) and
    /// returns P.
    fn decoder_penalty(&mut self, lambda: f32) -> f64 {
        let d = self.config.latent;
        let rows = self.last_rows;
        let mut z = vec![0.0f32; rows * d];
        self.backend.read(&self.z, &mut z);
        let mut perm: Vec<usize> = (0..rows).collect();
        perm.shuffle(&mut self.penalty_rng);
        let mut z_tilde = vec![0.0f32; rows * d];
        for i in 0..rows {
            let alpha: f32 = self.penalty_rng.gen();
            for j in 0..d {
                z_tilde[i * d + j] = alpha * z[i * d + j] + (1.0 - alpha) * z[perm[i] * d + j];
            }
        }
        self.decoder.penalty_at(&z_tilde, lambda)
    }

    /// The encoder-side penalty of the authors' code (`compute_lipschitz_penalty_encoder`):
    /// x̃ = α·x + (1 − α)·x[perm] over the batch `x`, g = ∂(Σⱼ μⱼ + Σⱼ log σ²ⱼ)/∂x̃,
    /// P = mean((√(‖g‖² + 1e-7) − 1)²). Adds λ·∂P/∂θ to the encoder's gradients and returns P.
    pub(crate) fn encoder_penalty(&mut self, x: &[f32], lambda: f32) -> f64 {
        let n = self.config.input;
        let rows = x.len() / n;
        let mut perm: Vec<usize> = (0..rows).collect();
        perm.shuffle(&mut self.penalty_rng);
        let mut x_tilde = vec![0.0f32; rows * n];
        for (i, row) in x_tilde.chunks_mut(n).enumerate() {
            let alpha: f32 = self.penalty_rng.gen();
            let (a, b) = (&x[i * n..(i + 1) * n], &x[perm[i] * n..(perm[i] + 1) * n]);
            row.iter_mut().zip(a.iter().zip(b)).for_each(|(t, (u, v))| *t = alpha * u + (1.0 - alpha) * v);
        }
        let ones = vec![1.0f32; rows * 2 * self.config.latent];
        self.encoder.gradient_penalty(&x_tilde, rows, &ones, lambda)
    }

    /// Sets every parameter gradient to zero (a DP-SGD step on an empty Poisson batch).
    pub fn zero_gradients(&mut self) {
        let b = self.backend.clone();
        self.for_each_param(|_, g, len| b.write(g, &vec![0.0; len]));
    }

    /// One optimiser step on one batch; errors if the loss is not finite.
    pub fn train_step(
        &mut self,
        x: &[f32],
        options: &TrainOptions,
        adam: &mut Adam<B>,
        proximal: Option<&ProximalAnchor<B>>,
        latents: Option<&mut Vec<f32>>,
    ) -> Result<Loss, VaeError> {
        let mut loss = self.forward_backward(x, options.kl_weight, latents);
        if options.lipschitz_penalty > 0.0 {
            loss.penalty = match options.penalty_on {
                PenaltyTarget::Decoder => self.decoder_penalty(options.lipschitz_penalty),
                PenaltyTarget::Encoder => self.encoder_penalty(x, options.lipschitz_penalty),
            };
            loss.total += f64::from(options.lipschitz_penalty) * loss.penalty;
        }
        self.steps += 1;
        if !loss.total.is_finite() {
            return Err(VaeError::NonFinite { what: "loss", step: self.steps });
        }
        if let Some(anchor) = proximal {
            anchor.apply(self);
        }
        adam.step(self);
        Ok(loss)
    }

    /// One epoch over `data` (n × input, host memory) in shuffled mini-batches; returns the
    /// sample-weighted mean loss. Errors if the loss or any parameter becomes non-finite.
    pub fn train_epoch(
        &mut self,
        data: &[f32],
        options: &TrainOptions,
        adam: &mut Adam<B>,
        rng: &mut impl Rng,
        proximal: Option<&ProximalAnchor<B>>,
        mut latents: Option<&mut Vec<f32>>,
    ) -> Result<Loss, VaeError> {
        let input = self.config.input;
        let n = data.len() / input;
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        let mut batch = Vec::with_capacity(options.batch_size * input);
        let mut sum = Loss::default();
        for rows in order.chunks(options.batch_size.max(1)) {
            batch.clear();
            rows.iter().for_each(|&i| batch.extend_from_slice(&data[i * input..(i + 1) * input]));
            let loss = self.train_step(&batch, options, adam, proximal, latents.as_deref_mut())?;
            let w = rows.len() as f64;
            sum.add_weighted(&loss, w);
        }
        let mut finite = true;
        let b = self.backend.clone();
        self.for_each_param(|p, _, len| finite &= b.all_finite(p, len));
        if !finite {
            return Err(VaeError::NonFinite { what: "a parameter", step: self.steps });
        }
        let n = n.max(1) as f64;
        Ok(sum.divided(n))
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
