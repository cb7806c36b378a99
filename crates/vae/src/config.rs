//! Architecture of the MLP VAE.

use serde::{Deserialize, Serialize};

use crate::mlp::{check_layers, LayerWeights};
use crate::VaeError;

/// Architecture of an MLP VAE: input → encoder widths (ReLU) → [μ | log σ²] head → latent →
/// decoder widths (ReLU) → input (sigmoid).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaeConfig {
    /// Input dimension (784 for 28×28 images).
    pub input: usize,
    /// Hidden widths of the encoder.
    pub encoder: Vec<usize>,
    /// Latent dimension.
    pub latent: usize,
    /// Hidden widths of the decoder.
    pub decoder: Vec<usize>,
}

/// Architecture of a decoder alone: what a client update declares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecoderSpec {
    /// Latent dimension (decoder input).
    pub latent: usize,
    /// Hidden widths.
    pub hidden: Vec<usize>,
    /// Output dimension.
    pub output: usize,
}

impl VaeConfig {
    /// The authors' SimpleVAE: 784-512-256-128, z = 2, mirrored decoder.
    pub fn paper() -> Self {
        VaeConfig { input: 784, encoder: vec![512, 256, 128], latent: 2, decoder: vec![128, 256, 512] }
    }

    /// Rejects sizes that cannot work.
    pub fn validate(&self) -> Result<(), VaeError> {
        if self.input == 0 {
            return Err(VaeError::Config("input size is 0".into()));
        }
        if self.latent == 0 {
            return Err(VaeError::Config("latent size is 0; use at least 1 (the paper uses 2)".into()));
        }
        if let Some(w) = self.encoder.iter().chain(&self.decoder).find(|&&w| w == 0) {
            return Err(VaeError::Config(format!("a hidden layer has width {w}; widths must be positive")));
        }
        Ok(())
    }

    /// The decoder half.
    pub fn decoder_spec(&self) -> DecoderSpec {
        DecoderSpec { latent: self.latent, hidden: self.decoder.clone(), output: self.input }
    }

    /// (in, out) of each encoder layer, the last being the 2·latent head.
    pub fn encoder_dims(&self) -> Vec<(usize, usize)> {
        chain(self.input, &self.encoder, 2 * self.latent)
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        let count = |d: Vec<(usize, usize)>| d.iter().map(|(i, o)| i * o + o).sum::<usize>();
        count(self.encoder_dims()) + count(self.decoder_spec().dims())
    }
}

impl DecoderSpec {
    /// Checks decoder weights (e.g. received from a client) against this architecture.
    pub fn check_weights(&self, weights: &[LayerWeights]) -> Result<(), VaeError> {
        self.validate()?;
        check_layers("decoder", weights, &self.dims())
    }

    /// (in, out) of each decoder layer.
    pub fn dims(&self) -> Vec<(usize, usize)> {
        chain(self.latent, &self.hidden, self.output)
    }

    /// Rejects sizes that cannot work.
    pub fn validate(&self) -> Result<(), VaeError> {
        if self.latent == 0 || self.output == 0 || self.hidden.contains(&0) {
            return Err(VaeError::Config(format!("decoder spec {self:?} has a zero-sized layer")));
        }
        Ok(())
    }
}

fn chain(input: usize, hidden: &[usize], output: usize) -> Vec<(usize, usize)> {
    let mut sizes = vec![input];
    sizes.extend_from_slice(hidden);
    sizes.push(output);
    sizes.windows(2).map(|w| (w[0], w[1])).collect()
}
