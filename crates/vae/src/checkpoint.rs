//! VAE checkpoints as safetensors: tensors `encoder.{l}.weight` (out × in), `encoder.{l}.bias`,
//! `decoder.{l}.…`, and the architecture as JSON under the metadata key `config`.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::mlp::LayerWeights;
use crate::{VaeConfig, VaeError, VaeWeights};

fn err(path: &Path, reason: impl Into<String>) -> VaeError {
    VaeError::Checkpoint { path: path.display().to_string(), reason: reason.into() }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `weights` and `config` as the bytes of a safetensors checkpoint (written to disk by the
/// caller, which decides how: the pipeline writes every output file atomically).
pub fn encode_checkpoint(config: &VaeConfig, weights: &VaeWeights) -> Vec<u8> {
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (part, layers) in [("encoder", &weights.encoder), ("decoder", &weights.decoder)] {
        for (l, w) in layers.iter().enumerate() {
            buffers.push((format!("{part}.{l}.weight"), vec![w.out_dim, w.in_dim], f32_bytes(&w.weight)));
            buffers.push((format!("{part}.{l}.bias"), vec![w.out_dim], f32_bytes(&w.bias)));
        }
    }
    // Each buffer holds exactly its shape's f32 values, which is all a view or the encoder checks.
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            (name.clone(), TensorView::new(Dtype::F32, shape.clone(), bytes).expect("a buffer matches its shape"))
        })
        .collect();
    let config_json = serde_json::to_string(config).expect("a VaeConfig serialises");
    let metadata = HashMap::from([("config".to_string(), config_json)]);
    safetensors::serialize(views, &Some(metadata)).expect("matching views serialise")
}

/// Reads a checkpoint made by [`encode_checkpoint`], checking every tensor against the
/// architecture stored with it.
pub fn load_checkpoint(path: &Path) -> Result<(VaeConfig, VaeWeights), VaeError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    let (_, meta) =
        SafeTensors::read_metadata(&bytes).map_err(|e| err(path, format!("not a safetensors file: {e}")))?;
    let config_json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("config"))
        .ok_or_else(|| err(path, "no `config` metadata: not an align-fl VAE checkpoint"))?;
    let config: VaeConfig =
        serde_json::from_str(config_json).map_err(|e| err(path, format!("bad config metadata: {e}")))?;
    config.validate()?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| err(path, e.to_string()))?;
    let read = |name: String, shape: Vec<usize>| -> Result<Vec<f32>, VaeError> {
        let t = tensors.tensor(&name).map_err(|_| err(path, format!("tensor {name} is missing")))?;
        if t.dtype() != Dtype::F32 || t.shape() != shape.as_slice() {
            return Err(err(path, format!("tensor {name} is {:?} {:?}, expected F32 {shape:?}", t.dtype(), t.shape())));
        }
        Ok(t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
    };
    let load_part = |part: &str, dims: Vec<(usize, usize)>| -> Result<Vec<LayerWeights>, VaeError> {
        dims.iter()
            .enumerate()
            .map(|(l, &(i, o))| {
                Ok(LayerWeights {
                    in_dim: i,
                    out_dim: o,
                    weight: read(format!("{part}.{l}.weight"), vec![o, i])?,
                    bias: read(format!("{part}.{l}.bias"), vec![o])?,
                })
            })
            .collect()
    };
    let weights = VaeWeights {
        encoder: load_part("encoder", config.encoder_dims())?,
        decoder: load_part("decoder", config.decoder_spec().dims())?,
    };
    Ok((config, weights))
}
