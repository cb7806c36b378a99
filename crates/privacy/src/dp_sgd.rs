//! DP-SGD (Abadi et al. 2016) for the whole VAE: Poisson-sampled batches, per-sample clipping
//! through ghost norms (no per-sample gradients are materialised), Gaussian noise from a ChaCha20
//! CSPRNG, and three clipping rules — fixed, private adaptive (Andrew et al. 2021) and the
//! authors' unprivatised running median.
//!
//! A step on batch S (each record included independently with probability q, expected size
//! m = qN): gᵢ = ∇θ ℓᵢ with ℓᵢ = Σ_p (x̂ᵢₚ − xᵢₚ)² + (β/d) Σⱼ KLᵢⱼ (so the reference loss is the
//! batch mean of ℓᵢ); cᵢ = min(1, C/‖gᵢ‖); ĝ = (Σᵢ cᵢ gᵢ + N(0, σ_Δ² C² I)) / m; then Adam.

use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use tensor_kernels::{NoiseKey, TrainingOps};
use vae::{run_epoch, Adam, GradientScope, Loss, TrainOptions, Vae, VaeError};

use crate::{AccountantKind, DpEvent, PrivacyError};

/// How the clipping threshold C is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum ClippingRule {
    /// C stays at `max_grad_norm`.
    Fixed,
    /// Private quantile tracking (Andrew et al. 2021): C ← C·exp(−η(b̃ − γ)) with b̃ the noised
    /// fraction of unclipped samples; the gradient noise is reduced so that the pair of queries
    /// is as private as one Gaussian query with the calibrated σ.
    Adaptive,
    /// The authors' rule: C = median of the batch's per-sample norms, not privatised (not
    /// covered by the guarantee).
    PaperMedian,
}

/// The parameters of [`ClippingRule::Adaptive`] (Andrew et al. 2021); unused by the other rules.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveClipping {
    /// γ, the target fraction of unclipped samples (0.5: the median).
    pub target_quantile: f64,
    /// η, the geometric learning rate of C.
    pub learning_rate: f64,
    /// σ_b, the standard deviation of the noise on the unclipped count.
    pub count_noise: f64,
}

/// How batches are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Each record independently with probability q: what the accountant analyses.
    Poisson,
    /// Shuffled fixed-size batches: not covered by the accountant.
    Shuffled,
}

/// Where the noise's randomness comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum NoiseSource {
    /// ChaCha20 keyed from the operating system's entropy: the noise cannot be regenerated.
    Secure,
    /// ChaCha20 keyed from the run seed: reproducible, and removable by anyone with the seed (not
    /// covered by the guarantee).
    Reproducible,
}

/// Everything DP-SGD needs for one client.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DpSgdSettings {
    /// σ: noise standard deviation over C of the (combined) Gaussian queries.
    pub noise_multiplier: f64,
    /// Initial (fixed: constant) clipping threshold C.
    pub max_grad_norm: f64,
    /// Clipping rule.
    pub clipping: ClippingRule,
    /// The adaptive rule's parameters.
    pub adaptive: AdaptiveClipping,
    /// Batch sampling.
    pub sampling: Sampling,
    /// Noise randomness.
    pub noise: NoiseSource,
    /// The run seed, which keys [`NoiseSource::Reproducible`] noise (unused for secure noise).
    pub seed: u64,
    /// The parameters that are clipped and noised.
    pub scope: GradientScope,
}

/// What a client reports about its privacy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivacySpent {
    /// ε of the steps taken so far at `delta`, as the accountant computes it.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// σ of the combined Gaussian queries.
    pub noise_multiplier: f64,
    /// q = batch size / N.
    pub sampling_rate: f64,
    /// DP-SGD steps taken.
    pub steps: u64,
    /// The accountant that computed ε.
    pub accountant: AccountantKind,
    /// The clipping rule.
    pub clipping: ClippingRule,
    /// Clipping threshold after the last step.
    pub final_clip_norm: f64,
    /// Where the noise came from.
    pub noise: NoiseSource,
    /// How batches were drawn.
    pub sampling: Sampling,
    /// Whether the (ε, δ) guarantee holds for what was run.
    pub guarantee_holds: bool,
    /// Why it does not, one reason per line.
    pub reasons: Vec<String>,
}

/// What one client's whole release costs: every DP-SGD training on its data in a run (the main
/// strategy's model and each baseline's), composed by the accountant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComposedPrivacy {
    /// ε of the composition at `delta`.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// Trainings composed (models released that saw the client's data).
    pub trainings: usize,
    /// Whether every training's guarantee holds (else the composition claims nothing).
    pub guarantee_holds: bool,
    /// Why not, one reason per line, without repeats.
    pub reasons: Vec<String>,
}

impl ComposedPrivacy {
    /// The composition of `parts`, which must share δ and the accountant (Mironov 2017: RDP
    /// adds up over mechanisms; the PLD accountant composes the loss distributions).
    pub fn of(parts: &[PrivacySpent]) -> Result<Self, PrivacyError> {
        let first = parts.first().ok_or(PrivacyError::InvalidParameter {
            name: "trainings",
            value: 0.0,
            expected: "at least one training to compose",
        })?;
        if let Some(p) = parts.iter().find(|p| p.delta != first.delta || p.accountant != first.accountant) {
            return Err(PrivacyError::InvalidParameter {
                name: "δ of a composed training",
                value: p.delta,
                expected: "every training composed must share δ and the accountant",
            });
        }
        let mut acc = first.accountant.make();
        for p in parts.iter().filter(|p| p.steps > 0) {
            acc.compose(DpEvent::PoissonSampledGaussian {
                sampling_rate: p.sampling_rate,
                noise_multiplier: p.noise_multiplier,
                steps: p.steps,
            })?;
        }
        let mut reasons: Vec<String> = parts.iter().flat_map(|p| p.reasons.iter().cloned()).collect();
        reasons.sort();
        reasons.dedup();
        Ok(ComposedPrivacy {
            epsilon: acc.epsilon(first.delta)?.epsilon,
            delta: first.delta,
            trainings: parts.len(),
            guarantee_holds: parts.iter().all(|p| p.guarantee_holds),
            reasons,
        })
    }
}

/// DP-SGD state of one client: clipping threshold, noise stream, step count. It serialises whole
/// so a client that runs one round per process resumes exactly where it stopped; under secure
/// noise that includes the noise key, so the state stays on the client's own machine.
#[derive(Serialize, Deserialize)]
pub struct DpSgd {
    settings: DpSgdSettings,
    sampling_rate: f64,
    clip_norm: f64,
    gradient_noise_multiplier: f64,
    noise_key: NoiseKey,
    rng: ChaCha20Rng,
    steps: u64,
    last_unclipped_fraction: f64,
}

impl DpSgd {
    /// DP-SGD for a client with `num_samples` records trained with `batch_size` (q = batch/N).
    /// `stream` separates the noise of different clients under one reproducible seed.
    pub fn new(
        settings: DpSgdSettings,
        num_samples: usize,
        batch_size: usize,
        stream: u64,
    ) -> Result<Self, PrivacyError> {
        let bad = |name, value, expected| Err(PrivacyError::InvalidParameter { name, value, expected });
        let sigma = settings.noise_multiplier;
        if !(sigma > 0.0 && sigma.is_finite()) {
            return bad("noise multiplier σ", sigma, "σ must be a positive finite number");
        }
        if !(settings.max_grad_norm > 0.0 && settings.max_grad_norm.is_finite()) {
            return bad("max grad norm C", settings.max_grad_norm, "C must be a positive finite number");
        }
        if num_samples == 0 || batch_size == 0 || batch_size > num_samples {
            return bad(
                "batch size",
                batch_size as f64,
                "the batch size must lie in 1..=N (the client's sample count)",
            );
        }
        let gradient_noise_multiplier = match settings.clipping {
            ClippingRule::Adaptive => {
                let AdaptiveClipping { count_noise, target_quantile, learning_rate } = settings.adaptive;
                #[allow(clippy::neg_cmp_op_on_partial_ord)] // !(x >= 0) also refuses NaN.
                if !(0.0..=1.0).contains(&target_quantile) || !(learning_rate >= 0.0) {
                    return bad(
                        "adaptive clipping γ",
                        target_quantile,
                        "γ must lie in [0, 1] and η must be non-negative",
                    );
                }
                // σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−1/2) (Andrew et al. 2021, Thm. 1).
                let rest = sigma.powi(-2) - (2.0 * count_noise).powi(-2);
                #[allow(clippy::neg_cmp_op_on_partial_ord)] // !(x > 0) also refuses NaN.
                if !(rest > 0.0) {
                    return bad("count noise σ_b", count_noise, "σ_b must exceed σ/2 for adaptive clipping");
                }
                rest.powf(-0.5)
            }
            ClippingRule::Fixed | ClippingRule::PaperMedian => sigma,
        };
        let (noise_seed, rng) = match settings.noise {
            NoiseSource::Secure => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                (key, ChaCha20Rng::from_rng(rand::rngs::OsRng).expect("the operating system's entropy source"))
            }
            NoiseSource::Reproducible => {
                let mut rng = ChaCha20Rng::seed_from_u64(settings.seed);
                rng.set_stream(stream);
                let mut key = [0u8; 32];
                rng.fill_bytes(&mut key);
                (key, rng)
            }
        };
        Ok(DpSgd {
            settings,
            sampling_rate: batch_size as f64 / num_samples as f64,
            clip_norm: settings.max_grad_norm,
            gradient_noise_multiplier,
            noise_key: NoiseKey { seed: noise_seed, stream, offset: 0 },
            rng,
            steps: 0,
            last_unclipped_fraction: f64::NAN,
        })
    }

    /// q.
    pub fn sampling_rate(&self) -> f64 {
        self.sampling_rate
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Current clipping threshold.
    pub fn clip_norm(&self) -> f64 {
        self.clip_norm
    }

    /// The noise multiplier applied to the gradient sum (σ_Δ; equals σ unless adaptive).
    pub fn gradient_noise_multiplier(&self) -> f64 {
        self.gradient_noise_multiplier
    }

    /// The privacy spent so far at δ under `accountant`, with the reasons the guarantee does not
    /// hold for what was run (`extra_reasons` adds the caller's, e.g. a non-private prior).
    pub fn spent(
        &self,
        delta: f64,
        accountant: AccountantKind,
        extra_reasons: &[String],
    ) -> Result<PrivacySpent, PrivacyError> {
        let mut acc = accountant.make();
        if self.steps > 0 {
            acc.compose(DpEvent::PoissonSampledGaussian {
                sampling_rate: self.sampling_rate,
                noise_multiplier: self.settings.noise_multiplier,
                steps: self.steps,
            })?;
        }
        let epsilon = acc.epsilon(delta)?.epsilon;
        let mut reasons = Vec::new();
        if self.settings.sampling == Sampling::Shuffled {
            reasons.push(
                "batches were shuffled, not Poisson-sampled: the accountant's analysis does not apply".to_string(),
            );
        }
        if self.settings.clipping == ClippingRule::PaperMedian {
            reasons.push(
                "the clipping threshold is the unprivatised median of per-sample gradient norms (paper-median)"
                    .to_string(),
            );
        }
        if self.settings.noise == NoiseSource::Reproducible {
            reasons.push(
                "the noise was seeded from --seed: anyone who knows the seed can regenerate and remove it".to_string(),
            );
        }
        if self.settings.scope == GradientScope::DecoderOnly {
            reasons.push(
                "DP-SGD covered the decoder only (dec_dp): the encoder trained without clipping or noise and shapes \
                 every decoder gradient, so one record can move the decoder without bound"
                    .to_string(),
            );
        }
        reasons.extend_from_slice(extra_reasons);
        Ok(PrivacySpent {
            epsilon,
            delta,
            noise_multiplier: self.settings.noise_multiplier,
            sampling_rate: self.sampling_rate,
            steps: self.steps,
            accountant,
            clipping: self.settings.clipping,
            final_clip_norm: self.clip_norm,
            noise: self.settings.noise,
            sampling: self.settings.sampling,
            guarantee_holds: reasons.is_empty(),
            reasons,
        })
    }

    /// Fraction of the last non-empty batch whose gradient norm was within C.
    pub fn last_unclipped_fraction(&self) -> f64 {
        self.last_unclipped_fraction
    }

    /// One epoch: ⌈N / batch⌉ steps on Poisson-sampled (or shuffled) batches. Returns the
    /// sample-weighted mean loss of the non-empty batches.
    pub fn train_epoch<B: TrainingOps>(
        &mut self,
        vae: &mut Vae<B>,
        data: &[f32],
        options: &TrainOptions,
        adam: &mut Adam<B>,
        mut latents: Option<&mut Vec<f32>>,
    ) -> Result<Loss, VaeError> {
        let input = vae.config().input;
        let n = data.len() / input;
        let steps = n.div_ceil(options.batch_size);
        let batches: Vec<Vec<usize>> = match self.settings.sampling {
            Sampling::Poisson => {
                (0..steps).map(|_| (0..n).filter(|_| self.rng.gen::<f64>() < self.sampling_rate).collect()).collect()
            }
            Sampling::Shuffled => {
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut self.rng);
                order.chunks(options.batch_size).map(<[usize]>::to_vec).collect()
            }
        };
        run_epoch(data, input, batches.iter().map(Vec::as_slice), |batch| {
            self.step(vae, batch, options, adam, latents.as_deref_mut())
        })
    }

    /// One DP-SGD step on `x` (rows × input, possibly empty); None for an empty batch.
    fn step<B: TrainingOps>(
        &mut self,
        vae: &mut Vae<B>,
        x: &[f32],
        options: &TrainOptions,
        adam: &mut Adam<B>,
        latents: Option<&mut Vec<f32>>,
    ) -> Result<Option<Loss>, VaeError> {
        self.steps += 1;
        let rows = x.len() / vae.config().input;
        // m = qN, the expected batch size, which equals the configured batch size.
        let expected = options.batch_size as f64;
        let mut unclipped = 0.0;
        let loss = if rows == 0 {
            vae.zero_gradients();
            None
        } else {
            let (loss, squared) = vae.per_sample_gradient_norms(x, options.kl_weight, self.settings.scope, latents);
            if !loss.total.is_finite() {
                return Err(VaeError::NonFinite { what: "loss", step: self.steps });
            }
            let norms: Vec<f64> = squared.iter().map(|s| s.sqrt()).collect();
            if self.settings.clipping == ClippingRule::PaperMedian {
                let mut sorted = norms.clone();
                sorted.sort_by(f64::total_cmp);
                self.clip_norm = sorted[sorted.len() / 2].max(1e-12);
            }
            let c = self.clip_norm;
            vae.clipped_gradient_sum(c, self.settings.scope);
            unclipped = norms.iter().filter(|&&g| g <= c).count() as f64;
            self.last_unclipped_fraction = unclipped / rows as f64;
            Some(loss)
        };
        // ĝ = (Σ cᵢ gᵢ + N(0, σ_Δ² C²)) / m, with the C this step clipped at, fused into Adam.
        let std = (self.gradient_noise_multiplier * self.clip_norm) as f32;
        self.noise_key = adam.noisy_step(vae, std, (1.0 / expected) as f32, self.noise_key, self.settings.scope);
        if self.settings.clipping == ClippingRule::Adaptive {
            let AdaptiveClipping { target_quantile, learning_rate, count_noise } = self.settings.adaptive;
            // b̃ = (Σ(bᵢ − ½) + N(0, σ_b²)) / m + ½; Σ(bᵢ − ½) has sensitivity ½ (Andrew et al. 2021, §3).
            let noise: f64 = StandardNormal.sample(&mut self.rng);
            let fraction = (unclipped - 0.5 * rows as f64 + count_noise * noise) / expected + 0.5;
            self.clip_norm *= (-learning_rate * (fraction - target_quantile)).exp();
        }
        Ok(loss)
    }
}
