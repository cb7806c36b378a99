//! Local training: the optimiser settings, the mini-batch epoch that plain training and DP-SGD
//! share, and the VAE's training step.

use rand::seq::SliceRandom;
use rand::Rng;
use tensor_kernels::TrainingOps;

use crate::{Adam, Loss, PenaltyTarget, ProximalAnchor, Vae, VaeError};

/// Optimiser settings of local training.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// One epoch: runs `step` on each batch of rows of `data` (n × `input`, host memory) that
/// `batches` lists by row index, gathered into one reused buffer, and returns the
/// sample-weighted mean loss of the batches `step` reports a loss for (an empty batch may report
/// none).
pub fn run_epoch<'a, E>(
    data: &[f32],
    input: usize,
    batches: impl IntoIterator<Item = &'a [usize]>,
    mut step: impl FnMut(&[f32]) -> Result<Option<Loss>, E>,
) -> Result<Loss, E> {
    let mut buffer = Vec::new();
    let mut sum = Loss::default();
    let mut seen = 0usize;
    for rows in batches {
        buffer.clear();
        rows.iter().for_each(|&i| buffer.extend_from_slice(&data[i * input..(i + 1) * input]));
        if let Some(loss) = step(&buffer)? {
            sum.add_weighted(&loss, rows.len() as f64);
            seen += rows.len();
        }
    }
    Ok(sum.divided(seen.max(1) as f64))
}

impl<B: TrainingOps> Vae<B> {
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
        let step = self.count_step();
        if !loss.total.is_finite() {
            return Err(VaeError::NonFinite { what: "loss", step });
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
        let input = self.config().input;
        let mut order: Vec<usize> = (0..data.len() / input).collect();
        order.shuffle(rng);
        let loss = run_epoch(data, input, order.chunks(options.batch_size.max(1)), |batch| {
            self.train_step(batch, options, adam, proximal, latents.as_deref_mut()).map(Some)
        })?;
        let b = self.backend().clone();
        if !self.params().all(|p| b.all_finite(p.value, p.len)) {
            return Err(VaeError::NonFinite { what: "a parameter", step: self.steps() });
        }
        Ok(loss)
    }
}
