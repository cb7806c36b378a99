//! A federated client: its private shard, its own VAE (kept across rounds) and local training.

use privacy::{AccountantKind, DpSgd};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tensor_kernels::TrainingOps;
use vae::{Adam, DiagonalGmm, LatentPrior, Loss, ProximalAnchor, TrainOptions, Vae, VaeConfig};

use crate::seeds::{derive_seed, Stream};
use crate::{ClientUpdate, FederationError, Progress, UpdatePayload};

/// EM iterations allowed when fitting a client's GMM prior.
const GMM_MAX_ITER: usize = 100;

/// Which latent prior a client fits and uploads with its decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PriorKind {
    /// Diagonal GMM fitted on every latent drawn during the round's training (the paper).
    Gmm,
    /// N(0, I): nothing fitted.
    StandardNormal,
}

/// The prior a client uploads, with the GMM's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PriorFit {
    /// Which prior.
    pub kind: PriorKind,
    /// GMM components (the paper: 10); unused for N(0, I).
    pub gmm_components: usize,
}

/// What a client uploads.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Upload {
    /// Decoder plus a prior (ALIGN-FL).
    Decoder(PriorFit),
    /// All parameters (FedAvg / FedProx).
    FullModel,
}

/// Where a client's model starts a round.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ClientStart {
    /// From its own model of the last round (ALIGN-FL's stateful clients).
    KeepLocal,
    /// From the server's global weights.
    FromGlobal(vae::VaeWeights),
}

/// Local training settings.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LocalTraining {
    /// Epochs per round.
    pub epochs: usize,
    /// Batch size, learning rate, β.
    pub options: TrainOptions,
}

/// The server's instructions for a round.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoundPlan {
    /// Starting weights.
    pub start: ClientStart,
    /// What to send back.
    pub upload: Upload,
    /// FedProx's μ, if any.
    pub proximal_mu: Option<f32>,
    /// Local training settings.
    pub local: LocalTraining,
}

/// DP-SGD state of a client and how its privacy is reported.
pub struct ClientPrivacy {
    /// The DP-SGD state (noise stream, clipping threshold, steps).
    pub dp_sgd: DpSgd,
    /// δ of the reported guarantee.
    pub delta: f64,
    /// Accountant of the reported ε.
    pub accountant: AccountantKind,
}

/// One client.
pub struct Client<B: TrainingOps> {
    id: usize,
    data: Vec<f32>,
    model: Vae<B>,
    seed: u64,
    privacy: Option<ClientPrivacy>,
}

impl<B: TrainingOps> Client<B> {
    /// Client `id` holding `data` (n × input, values in [0, 1]) with a model of `config`
    /// initialised from the run seed.
    pub fn new(backend: &B, id: usize, data: Vec<f32>, config: &VaeConfig, seed: u64) -> Result<Self, FederationError> {
        if data.is_empty() || !data.len().is_multiple_of(config.input) {
            return Err(FederationError::Config(format!(
                "client {id}: {} values are not a whole number of {}-pixel samples",
                data.len(),
                config.input
            )));
        }
        let model = Vae::new(backend, config, derive_seed(seed, Stream::ClientInit, id as u64, 0))?;
        Ok(Client { id, data, model, seed, privacy: None })
    }

    /// Trains this client with DP-SGD from now on, reporting its privacy with every update.
    pub fn with_dp_sgd(mut self, privacy: ClientPrivacy) -> Self {
        self.privacy = Some(privacy);
        self
    }

    /// The client's id.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Number of training samples.
    pub fn num_samples(&self) -> usize {
        self.data.len() / self.model.config().input
    }

    /// The client's current model.
    pub fn model(&mut self) -> &mut Vae<B> {
        &mut self.model
    }

    /// What the client carries into its next round: its model's training state and its DP-SGD
    /// state (Adam restarts every round and the shuffling streams derive from the seed, so these
    /// two are all a client that runs one round per process needs to keep).
    pub fn into_carried(self) -> (vae::VaeState, Option<DpSgd>) {
        (self.model.training_state(), self.privacy.map(|p| p.dp_sgd))
    }

    /// Trains locally for one round as `plan` says and builds the update to upload.
    pub fn fit(
        &mut self,
        round: usize,
        plan: &RoundPlan,
        progress: &dyn Progress,
    ) -> Result<ClientUpdate, FederationError> {
        let diverged = |source| FederationError::Diverged { round, who: format!("client {}", self.id), source };
        if let ClientStart::FromGlobal(weights) = &plan.start {
            self.model.set_weights(weights).map_err(|e| {
                FederationError::Config(format!(
                    "client {}: cannot load the global model ({e}); FedAvg needs one architecture for all",
                    self.id
                ))
            })?;
        }
        let anchor = plan.proximal_mu.map(|mu| ProximalAnchor::new(&mut self.model, mu));
        let mut adam = Adam::new(&mut self.model, plan.local.options.learning_rate);
        let id = self.id as u64;
        let mut rng = ChaCha20Rng::seed_from_u64(derive_seed(self.seed, Stream::ClientShuffle, id, round as u64));
        let collect = matches!(plan.upload, Upload::Decoder(PriorFit { kind: PriorKind::Gmm, .. }));
        let mut latents = Vec::new();
        let mut loss = Loss::default();
        if self.privacy.is_some() && anchor.is_some() {
            return Err(FederationError::Config("FedProx's proximal term is not supported with DP-SGD".into()));
        }
        for epoch in 0..plan.local.epochs {
            let latents = collect.then_some(&mut latents);
            loss = match &mut self.privacy {
                Some(p) => p.dp_sgd.train_epoch(&mut self.model, &self.data, &plan.local.options, &mut adam, latents),
                None => self.model.train_epoch(
                    &self.data,
                    &plan.local.options,
                    &mut adam,
                    &mut rng,
                    anchor.as_ref(),
                    latents,
                ),
            }
            .map_err(diverged)?;
            progress.client_epoch(self.id, epoch + 1, plan.local.epochs, &loss);
        }
        let privacy = match &self.privacy {
            Some(p) => {
                let prior_reason = collect.then(|| {
                    "the GMM prior was fitted on latents of the private data without noise (--allow-non-private-prior)".to_string()
                });
                let spent = p.dp_sgd.spent(p.delta, p.accountant, prior_reason.as_slice()).map_err(|e| {
                    FederationError::Config(format!("client {}: privacy accounting failed: {e}", self.id))
                })?;
                Some(spent)
            }
            None => None,
        };
        let config = self.model.config().clone();
        let payload = match plan.upload {
            Upload::Decoder(PriorFit { kind, gmm_components: components }) => {
                let prior = match kind {
                    PriorKind::StandardNormal => LatentPrior::StandardNormal { dim: config.latent },
                    PriorKind::Gmm => {
                        let mut fit_rng =
                            ChaCha20Rng::seed_from_u64(derive_seed(self.seed, Stream::PriorFit, id, round as u64));
                        LatentPrior::Gmm(
                            DiagonalGmm::fit(&latents, config.latent, components, GMM_MAX_ITER, &mut fit_rng)
                                .map_err(diverged)?,
                        )
                    }
                };
                UpdatePayload::Decoder { spec: config.decoder_spec(), weights: self.model.weights().decoder, prior }
            }
            Upload::FullModel => UpdatePayload::FullModel { config, weights: self.model.weights() },
        };
        Ok(ClientUpdate {
            client_id: self.id,
            round,
            num_samples: self.num_samples(),
            payload,
            train_loss: privacy.is_none().then_some(loss),
            privacy,
        })
    }
}
