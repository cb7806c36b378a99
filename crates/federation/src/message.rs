//! What crosses the wire from a client to the server: a header naming the format and its
//! version, then the update in bincode (fixed-width integers, little-endian, no trailing bytes, a
//! size limit). The encoded length is the uplink cost reported per round.

use bincode::Options;
use serde::{Deserialize, Serialize};
use vae::{DecoderSpec, LatentPrior, LayerWeights, Loss, VaeConfig, VaeWeights};

use crate::FederationError;

/// Largest update accepted (1 GiB): a length prefix beyond this is treated as corrupt rather
/// than allocated.
const MAX_UPDATE_BYTES: u64 = 1 << 30;

/// The format name every encoded update starts with.
pub const UPDATE_FORMAT: &[u8; 16] = b"align-fl/update\0";
/// The version of the update's layout after the header (a little-endian u16 after the name).
/// Raise it whenever `ClientUpdate` or anything inside it changes shape.
pub const UPDATE_FORMAT_VERSION: u16 = 1;

fn codec() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(MAX_UPDATE_BYTES)
}

/// One client's contribution to a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientUpdate {
    /// Sender.
    pub client_id: usize,
    /// 1-based round.
    pub round: usize,
    /// Training samples the client holds (FedAvg's weight). Under DP-SGD the accountant treats
    /// it as public, as its sampling rate q = batch / N does.
    pub num_samples: usize,
    /// The model part being shared.
    pub payload: UpdatePayload,
    /// Local training loss of the round's last epoch; None under DP-SGD, where an un-noised loss
    /// of the private data is no part of what the accountant covers.
    pub train_loss: Option<Loss>,
    /// Privacy spent so far, for clients trained with DP-SGD.
    pub privacy: Option<privacy::PrivacySpent>,
}

/// The model part a client shares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum UpdatePayload {
    /// ALIGN-FL: the decoder and the latent prior to sample it with — nothing else.
    Decoder {
        /// Architecture of the decoder.
        spec: DecoderSpec,
        /// Its weights.
        weights: Vec<LayerWeights>,
        /// Prior over its latent space.
        prior: LatentPrior,
    },
    /// FedAvg / FedProx: every parameter of the VAE.
    FullModel {
        /// Architecture.
        config: VaeConfig,
        /// Weights.
        weights: VaeWeights,
    },
}

impl ClientUpdate {
    /// Encodes for the wire: [`UPDATE_FORMAT`], [`UPDATE_FORMAT_VERSION`], then the update.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = UPDATE_FORMAT.to_vec();
        bytes.extend_from_slice(&UPDATE_FORMAT_VERSION.to_le_bytes());
        codec().serialize_into(&mut bytes, self).expect("an in-memory update always serialises");
        bytes
    }

    /// Decodes bytes from client `sender`: refuses another format or version (naming both
    /// versions), then checks that the contents match the declared architecture (layer shapes,
    /// finite values, prior dimension).
    pub fn decode(bytes: &[u8], sender: usize) -> Result<Self, FederationError> {
        let malformed = |reason: String| FederationError::MalformedUpdate { client: sender, reason };
        let header = UPDATE_FORMAT.len() + 2;
        if bytes.len() < header || bytes[..UPDATE_FORMAT.len()] != UPDATE_FORMAT[..] {
            let start = &bytes[..bytes.len().min(UPDATE_FORMAT.len())];
            return Err(malformed(format!(
                "not an align-fl client update: it starts with {:?}, not {:?}",
                String::from_utf8_lossy(start),
                String::from_utf8_lossy(UPDATE_FORMAT)
            )));
        }
        let version = u16::from_le_bytes([bytes[UPDATE_FORMAT.len()], bytes[UPDATE_FORMAT.len() + 1]]);
        if version != UPDATE_FORMAT_VERSION {
            return Err(FederationError::UpdateVersion { client: sender, got: version, reads: UPDATE_FORMAT_VERSION });
        }
        let update: ClientUpdate = codec().deserialize(&bytes[header..]).map_err(|e| malformed(e.to_string()))?;
        let invalid = |reason: String| FederationError::InvalidUpdate { client: sender, reason };
        if update.client_id != sender {
            return Err(invalid(format!("claims to come from client {}", update.client_id)));
        }
        match &update.payload {
            UpdatePayload::Decoder { spec, weights, prior } => {
                spec.check_weights(weights).map_err(|e| invalid(e.to_string()))?;
                prior.validate().map_err(|e| invalid(e.to_string()))?;
                if prior.dim() != spec.latent {
                    return Err(invalid(format!(
                        "prior has dimension {} but the decoder takes {} latents",
                        prior.dim(),
                        spec.latent
                    )));
                }
            }
            UpdatePayload::FullModel { config, weights } => {
                config.validate().map_err(|e| invalid(e.to_string()))?;
                weights.check(config).map_err(|e| invalid(e.to_string()))?;
            }
        }
        Ok(update)
    }
}
