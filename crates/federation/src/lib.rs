//! Federated learning across clients with disjoint data: ALIGN-FL (decoders + priors up,
//! synthetic data at the server), FedAvg and FedProx behind one [`Strategy`] seam, client
//! updates that cross a (simulated) wire as bincode bytes, and the round loop.
//!
//! ```
//! use federation::*;
//! use tensor_kernels::Cpu;
//! use vae::{TrainOptions, Vae, VaeConfig};
//! let cpu = Cpu::new();
//! let config = VaeConfig { input: 4, encoder: vec![8], latent: 2, decoder: vec![8] };
//! let local = LocalTraining { epochs: 1, options: TrainOptions::default() };
//! let settings = AlignFlSettings {
//!     synthetic_samples: 20, server_epochs: 1, server_training: TrainOptions::default(),
//!     prior: PriorFit { kind: PriorKind::StandardNormal, gmm_components: 0 }, local,
//! };
//! let clients = (0..2)
//!     .map(|k| Client::new(&cpu, k, vec![0.25 * k as f32; 4 * 16], &config, 7))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let strategy = AlignFl::new(Vae::new(&cpu, &config, 1)?, settings, 7);
//! let mut fed = Federation::new(clients, Box::new(strategy))?;
//! let outcome = fed.run_round(&Silent)?;
//! assert_eq!(outcome.server.synthetic_samples, 40);
//! # Ok::<(), FederationError>(())
//! ```

mod client;
mod error;
mod message;
mod seeds;
mod simulation;
mod strategy;

pub use client::{Client, ClientPrivacy, ClientStart, LocalTraining, PriorFit, PriorKind, RoundPlan, Upload};
pub use error::FederationError;
pub use message::{
    decode_framed, encode_framed, ClientUpdate, FrameError, UpdatePayload, MAX_FRAMED_MESSAGE_BYTES, UPDATE_FORMAT,
    UPDATE_FORMAT_VERSION,
};
pub use seeds::{derive_seed, Stream};
pub use simulation::{Federation, Progress, RoundOutcome, Silent};
pub use strategy::{weighted_average, AlignFl, AlignFlSettings, FedAvg, ServerStats, Strategy};

#[cfg(test)]
mod tests;
