//! Optimisation over a model's parameter list: Adam (Kingma & Ba 2015), with DP-SGD's noise
//! fused into the update, and FedProx's proximal term μ/2 ‖w − w_ref‖² (Li et al. 2020).

use tensor_kernels::{AdamStep, Backend, GradientNoise, NoiseKey, TrainingOps};

use crate::{GradientScope, Vae};

/// One parameter tensor of a model with its gradient.
pub struct Param<'a, B: Backend> {
    /// The values.
    pub value: &'a mut B::Buffer,
    /// The gradient.
    pub grad: &'a mut B::Buffer,
    /// Number of values.
    pub len: usize,
}

/// Adam state for one model (moments per parameter, step count).
pub struct Adam<B: TrainingOps> {
    learning_rate: f32,
    /// First and second moments, one pair per tensor of [`Vae::params`].
    moments: Vec<(B::Buffer, B::Buffer)>,
    t: u64,
    /// Parameter tensors of the encoder (they come first in [`Vae::params`]).
    encoder_tensors: usize,
}

impl<B: TrainingOps> Adam<B> {
    /// Fresh state (zero moments) for `vae`.
    pub fn new(vae: &mut Vae<B>, learning_rate: f32) -> Self {
        let b = vae.backend().clone();
        let moments = vae.params().map(|p| (b.zeros(p.len), b.zeros(p.len))).collect();
        Adam { learning_rate, moments, t: 0, encoder_tensors: vae.encoder_tensors() }
    }

    /// Applies one update from the gradients currently held by `vae`.
    pub fn step(&mut self, vae: &mut Vae<B>) {
        self.update(vae, None, 0);
    }

    /// Applies one update from scale · (gradient + std · z) on the parameters in `scope`, z the
    /// noise stream `key` laid over them in [`Vae::params`] order (DP-SGD's noised mean
    /// gradient); parameters outside the scope step on their gradient as it is. Returns the
    /// stream position after the last noised parameter.
    pub fn noisy_step(
        &mut self,
        vae: &mut Vae<B>,
        std: f32,
        scale: f32,
        key: NoiseKey,
        scope: GradientScope,
    ) -> NoiseKey {
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
        let b = vae.backend().clone();
        let step = AdamStep::new(self.learning_rate, self.t);
        for (i, (p, moments)) in vae.params().zip(&mut self.moments).enumerate() {
            let noised = noise.filter(|_| i >= first_noised);
            b.adam(p.value, p.grad, moments, p.len, step, noised);
            if let (Some(n), true) = (&mut noise, noised.is_some()) {
                n.key.offset += p.len as u64;
            }
        }
        noise.map(|n| n.key)
    }
}

/// A copy of reference parameters for FedProx's proximal term μ/2 ‖w − w_ref‖² (Li et al. 2020).
pub struct ProximalAnchor<B: TrainingOps> {
    /// One copy per tensor of [`Vae::params`].
    params: Vec<B::Buffer>,
    mu: f32,
}

impl<B: TrainingOps> ProximalAnchor<B> {
    /// Anchors at the current parameters of `vae`.
    pub fn new(vae: &mut Vae<B>, mu: f32) -> Self {
        let b = vae.backend().clone();
        let params = vae
            .params()
            .map(|p| {
                let mut copy = b.zeros(p.len);
                b.copy(p.value, &mut copy, p.len);
                copy
            })
            .collect();
        ProximalAnchor { params, mu }
    }

    /// grad += μ (w − w_ref) for every parameter.
    pub(crate) fn apply(&self, vae: &mut Vae<B>) {
        let b = vae.backend().clone();
        for (p, anchor) in vae.params().zip(&self.params) {
            b.axpy(self.mu, p.value, p.grad, p.len);
            b.axpy(-self.mu, anchor, p.grad, p.len);
        }
    }
}
