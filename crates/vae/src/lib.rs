//! The MLP VAE of ALIGN-FL: configurable architecture, hand-written backward pass, the reference
//! loss, Adam and FedProx's proximal term over the parameter list, training epochs, LCD-VAE's
//! gradient penalty, latent priors (standard normal, diagonal GMM) and safetensors checkpoints.
//!
//! ```
//! use tensor_kernels::Cpu;
//! use vae::{Adam, TrainOptions, Vae, VaeConfig};
//! use rand::SeedableRng;
//! let config = VaeConfig { input: 4, encoder: vec![8], latent: 2, decoder: vec![8] };
//! let mut model = Vae::new(&Cpu::new(), &config, 0)?;
//! let mut adam = Adam::new(&mut model, 1e-3);
//! let data = vec![0.5f32; 4 * 10];
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0);
//! let loss = model.train_epoch(&data, &TrainOptions::default(), &mut adam, &mut rng, None, None)?;
//! assert!(loss.total.is_finite());
//! # Ok::<(), vae::VaeError>(())
//! ```

mod checkpoint;
mod config;
mod error;
mod loss;
mod mlp;
mod model;
mod optim;
mod penalty;
mod prior;
mod train;

pub use checkpoint::{encode_checkpoint, load_checkpoint};
pub use config::{DecoderSpec, VaeConfig};
pub use error::VaeError;
pub use loss::Loss;
pub use mlp::LayerWeights;
pub use model::{Decoder, GradientScope, Vae, VaeState, VaeWeights};
pub use optim::{Adam, Param, ProximalAnchor};
pub use penalty::PenaltyTarget;
pub use prior::{DiagonalGmm, LatentPrior};
pub use train::{run_epoch, TrainOptions};

#[cfg(test)]
mod tests;
