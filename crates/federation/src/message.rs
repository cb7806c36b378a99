//! What crosses the wire from a client to the server: a header naming the format and its
//! version, then the update in bincode (fixed-width integers, little-endian, no trailing bytes, a
//! size limit). The encoded length is the uplink cost reported per round.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use vae::{DecoderSpec, LatentPrior, LayerWeights, Loss, VaeConfig, VaeWeights};

use crate::FederationError;

/// Largest framed message body accepted (1 GiB): a length prefix beyond this is treated as
/// corrupt rather than allocated.
const MAX_FRAMED_BYTES: u64 = 1 << 30;
/// Largest framed message, header included (the 16-byte format name and the u16 version before
/// the body): a file beyond it is not read.
pub const MAX_FRAMED_MESSAGE_BYTES: u64 = 16 + 2 + MAX_FRAMED_BYTES;

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
        .with_limit(MAX_FRAMED_BYTES)
}

/// Why framed bytes (see [`encode_framed`]) do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The bytes do not start with the expected format name.
    #[error("expected {expected:?} data, found bytes starting with {starts_with:?}")]
    Format {
        /// The first bytes found, as text.
        starts_with: String,
        /// The format name expected.
        expected: String,
    },
    /// The expected format in another version.
    #[error("format version {got}, but this build reads version {reads}: run the same align-fl release everywhere")]
    Version {
        /// The version the bytes carry.
        got: u16,
        /// The version this build reads.
        reads: u16,
    },
    /// The header matches but the body does not decode.
    #[error("{0}")]
    Body(String),
}

/// `value` behind a header naming its format (16 bytes) and version (little-endian u16), in
/// bincode (fixed-width integers, little-endian, at most 1 GiB): every message and state file
/// that leaves a process is framed so.
pub fn encode_framed<T: Serialize>(format: &[u8; 16], version: u16, value: &T) -> Vec<u8> {
    let mut bytes = format.to_vec();
    bytes.extend_from_slice(&version.to_le_bytes());
    codec().serialize_into(&mut bytes, value).expect("an in-memory value always serialises");
    bytes
}

/// Decodes what [`encode_framed`] wrote with the same format name and version; refuses any other
/// name or version, trailing bytes and lengths beyond the limit.
pub fn decode_framed<T: DeserializeOwned>(format: &[u8; 16], version: u16, bytes: &[u8]) -> Result<T, FrameError> {
    let name = format.len();
    if bytes.len() < name + 2 || bytes[..name] != format[..] {
        return Err(FrameError::Format {
            starts_with: String::from_utf8_lossy(&bytes[..bytes.len().min(name)]).into_owned(),
            expected: String::from_utf8_lossy(format).trim_end_matches('\0').to_string(),
        });
    }
    let got = u16::from_le_bytes([bytes[name], bytes[name + 1]]);
    if got != version {
        return Err(FrameError::Version { got, reads: version });
    }
    codec().deserialize(&bytes[name + 2..]).map_err(|e| FrameError::Body(e.to_string()))
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
        encode_framed(UPDATE_FORMAT, UPDATE_FORMAT_VERSION, self)
    }

    /// Decodes bytes from client `sender`: refuses another format or version (naming both
    /// versions), then checks that the contents match the declared architecture (layer shapes,
    /// finite values, prior dimension).
    pub fn decode(bytes: &[u8], sender: usize) -> Result<Self, FederationError> {
        let update: ClientUpdate = decode_framed(UPDATE_FORMAT, UPDATE_FORMAT_VERSION, bytes).map_err(|e| match e {
            FrameError::Version { got, reads } => FederationError::UpdateVersion { client: sender, got, reads },
            FrameError::Format { .. } => FederationError::MalformedUpdate {
                client: sender,
                reason: format!("not an align-fl client update: {e}"),
            },
            FrameError::Body(reason) => FederationError::MalformedUpdate { client: sender, reason },
        })?;
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
