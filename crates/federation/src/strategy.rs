//! Server strategies: what clients are told each round and how their updates become the
//! global model.

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tensor_kernels::TrainingOps;
use vae::{Adam, Decoder, Loss, Vae, VaeWeights};

use crate::client::{ClientStart, LocalTraining, PriorFit, RoundPlan, Upload};
use crate::seeds::{derive_seed, Stream};
use crate::{ClientUpdate, FederationError, Progress, UpdatePayload};

/// What the server did with a round's updates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerStats {
    /// Synthetic images decoded and trained on (ALIGN-FL), 0 otherwise.
    pub synthetic_samples: usize,
    /// Loss of the server's last training epoch (ALIGN-FL), if it trained.
    pub train_loss: Option<Loss>,
}

/// A federated-learning server strategy.
pub trait Strategy<B: TrainingOps>: Send {
    /// Name used in reports ("align-fl", "fedavg", "fedprox").
    fn name(&self) -> &'static str;
    /// The instructions for round `round` (1-based).
    fn configure_round(&mut self, round: usize) -> RoundPlan;
    /// Turns the round's decoded updates into the new global model.
    fn aggregate(
        &mut self,
        round: usize,
        updates: &[ClientUpdate],
        progress: &dyn Progress,
    ) -> Result<ServerStats, FederationError>;
    /// The global model.
    fn global_model(&mut self) -> &mut Vae<B>;
}

/// Server-side settings of ALIGN-FL.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlignFlSettings {
    /// Latents drawn from each client's prior per round.
    pub synthetic_samples: usize,
    /// Epochs of global training per round.
    pub server_epochs: usize,
    /// Batch size, learning rate, β of the global training.
    pub server_training: vae::TrainOptions,
    /// The prior clients fit and upload.
    pub prior: PriorFit,
    /// Clients' local training.
    pub local: LocalTraining,
}

/// ALIGN-FL (Gulati, Groß, Wunder 2025): stateful clients upload decoder + prior; the server
/// decodes synthetic samples from every decoder, pools them and trains its global VAE on the pool.
pub struct AlignFl<B: TrainingOps> {
    global: Vae<B>,
    settings: AlignFlSettings,
    seed: u64,
}

impl<B: TrainingOps> AlignFl<B> {
    /// ALIGN-FL around an initial global model.
    pub fn new(global: Vae<B>, settings: AlignFlSettings, seed: u64) -> Self {
        AlignFl { global, settings, seed }
    }
}

impl<B: TrainingOps> Strategy<B> for AlignFl<B> {
    fn name(&self) -> &'static str {
        "align-fl"
    }

    fn configure_round(&mut self, _round: usize) -> RoundPlan {
        RoundPlan {
            start: ClientStart::KeepLocal,
            upload: Upload::Decoder(self.settings.prior),
            proximal_mu: None,
            local: self.settings.local,
        }
    }

    fn aggregate(
        &mut self,
        round: usize,
        updates: &[ClientUpdate],
        progress: &dyn Progress,
    ) -> Result<ServerStats, FederationError> {
        let input = self.global.config().input;
        let backend = self.global.backend().clone();
        let mut pool = Vec::with_capacity(updates.len() * self.settings.synthetic_samples * input);
        for u in updates {
            let invalid = |reason: String| FederationError::InvalidUpdate { client: u.client_id, reason };
            let UpdatePayload::Decoder { spec, weights, prior } = &u.payload else {
                return Err(invalid("ALIGN-FL expects a decoder and prior, got a full model".into()));
            };
            if spec.output != input {
                return Err(invalid(format!(
                    "decoder produces {} values, the global model takes {input}",
                    spec.output
                )));
            }
            let mut decoder = Decoder::from_weights(&backend, spec, weights).map_err(|e| invalid(e.to_string()))?;
            let mut rng =
                ChaCha20Rng::seed_from_u64(derive_seed(self.seed, Stream::Synthetic, u.client_id as u64, round as u64));
            let z = prior.sample(self.settings.synthetic_samples, &mut rng);
            pool.extend(decoder.decode(&z));
        }
        let mut adam = Adam::new(&mut self.global, self.settings.server_training.learning_rate);
        let mut rng = ChaCha20Rng::seed_from_u64(derive_seed(self.seed, Stream::ServerShuffle, 0, round as u64));
        let mut loss = None;
        for epoch in 0..self.settings.server_epochs {
            let l = self
                .global
                .train_epoch(&pool, &self.settings.server_training, &mut adam, &mut rng, None, None)
                .map_err(|source| FederationError::Diverged { round, who: "server".into(), source })?;
            progress.server_epoch(epoch + 1, self.settings.server_epochs, &l);
            loss = Some(l);
        }
        Ok(ServerStats { synthetic_samples: pool.len() / input, train_loss: loss })
    }

    fn global_model(&mut self) -> &mut Vae<B> {
        &mut self.global
    }
}

/// FedAvg (McMahan et al. 2017): clients start from the global model; the server averages every
/// parameter weighted by sample count. With a proximal μ it is FedProx (Li et al. 2020).
pub struct FedAvg<B: TrainingOps> {
    global: Vae<B>,
    local: LocalTraining,
    proximal_mu: Option<f32>,
}

impl<B: TrainingOps> FedAvg<B> {
    /// FedAvg around an initial global model.
    pub fn new(global: Vae<B>, local: LocalTraining) -> Self {
        FedAvg { global, local, proximal_mu: None }
    }

    /// FedProx: FedAvg whose clients add μ/2 ‖w − w_global‖² to their loss.
    pub fn fedprox(global: Vae<B>, local: LocalTraining, mu: f32) -> Self {
        FedAvg { global, local, proximal_mu: Some(mu) }
    }
}

/// Sample-weighted average of full-model updates (accumulated in f64). All updates must share
/// one architecture; the caller checks that.
pub fn weighted_average(updates: &[(&VaeWeights, usize)]) -> VaeWeights {
    let total: f64 = updates.iter().map(|(_, n)| *n as f64).sum();
    let mut out = updates[0].0.clone();
    for (l, layer) in out.layers_mut().enumerate() {
        let mut weight = vec![0.0f64; layer.weight.len()];
        let mut bias = vec![0.0f64; layer.bias.len()];
        for (w, n) in updates {
            let share = *n as f64 / total;
            let src = w.layers().nth(l).expect("same architecture");
            weight.iter_mut().zip(&src.weight).for_each(|(a, v)| *a += share * f64::from(*v));
            bias.iter_mut().zip(&src.bias).for_each(|(a, v)| *a += share * f64::from(*v));
        }
        layer.weight = weight.into_iter().map(|v| v as f32).collect();
        layer.bias = bias.into_iter().map(|v| v as f32).collect();
    }
    out
}

impl<B: TrainingOps> Strategy<B> for FedAvg<B> {
    fn name(&self) -> &'static str {
        if self.proximal_mu.is_some() {
            "fedprox"
        } else {
            "fedavg"
        }
    }

    fn configure_round(&mut self, _round: usize) -> RoundPlan {
        RoundPlan {
            start: ClientStart::FromGlobal(self.global.weights()),
            upload: Upload::FullModel,
            proximal_mu: self.proximal_mu,
            local: self.local,
        }
    }

    fn aggregate(
        &mut self,
        _round: usize,
        updates: &[ClientUpdate],
        _progress: &dyn Progress,
    ) -> Result<ServerStats, FederationError> {
        let mut parts = Vec::with_capacity(updates.len());
        for u in updates {
            let invalid = |reason: String| FederationError::InvalidUpdate { client: u.client_id, reason };
            let UpdatePayload::FullModel { config, weights } = &u.payload else {
                return Err(invalid(format!("{} expects full-model updates, got a decoder", self.name())));
            };
            if config != self.global.config() {
                return Err(invalid(format!(
                    "architecture {config:?} differs from the global {:?}",
                    self.global.config()
                )));
            }
            parts.push((weights, u.num_samples));
        }
        if parts.is_empty() {
            return Err(FederationError::Config("no client updates to average".into()));
        }
        self.global.set_weights(&weighted_average(&parts))?;
        Ok(ServerStats::default())
    }

    fn global_model(&mut self) -> &mut Vae<B> {
        &mut self.global
    }
}
