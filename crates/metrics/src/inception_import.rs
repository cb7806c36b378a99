//! pytorch-fid's checkpoint of the FID Inception (`pt_inception-2015-12-05-6726825d.pth`, a
//! PyTorch pickle) converted into [`INCEPTION_FILE`].
//!
//! pytorch-fid (Seitzer 2020) ports the same TF graph into torchvision's `Inception3` module
//! names (`Mixed_5b.branch5x5_1.conv.weight`, …) with a BatchNorm of ε = 10⁻³ after each
//! convolution. The conversion renames each convolution's weight and the BN's β and running
//! statistics into the names of inception-2015-12-05.md, and folds the BN scale γ (all ones in the
//! port, as the TF graph has none) into the weight and the mean:
//! γ·(conv(x, w) − m)/s + β = (conv(x, γ·w) − γ·m)/s + β. Multiplying by 1 is exact, so a faithful
//! copy converts to the published file byte for byte ([`INCEPTION_SHA256`]).

use std::path::Path;

use pytorch_reader::{DType, PytorchReader};

use crate::inception::{architecture, INCEPTION_FILE, INCEPTION_SHA256};
use crate::MetricsError;

/// pytorch-fid's release of the weights, which pytorch-fid, torch-fidelity and many papers' code
/// download on first use.
pub const PYTORCH_FID_URL: &str =
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth";
/// The release's published hash: torch.hub's convention, the leading hex digits of the file's
/// SHA-256, carried in its name.
pub const PYTORCH_FID_SHA256_PREFIX: &str = "6726825d";

/// The header metadata of the published [`INCEPTION_FILE`].
const METADATA: [(&str, &str); 2] = [
    ("graph", "inception-2015-12-05 (TF FID Inception v3, pool3 2048-d)"),
    ("conv_bn", "y = relu((conv(x, weight) - mean) / sqrt(var + 0.001) + beta)"),
];

/// torchvision's names of the stem convolutions, against the graph's.
const STEM: [(&str, &str); 5] = [
    ("conv", "Conv2d_1a_3x3"),
    ("conv_1", "Conv2d_2a_3x3"),
    ("conv_2", "Conv2d_2b_3x3"),
    ("conv_3", "Conv2d_3b_1x1"),
    ("conv_4", "Conv2d_4a_3x3"),
];

/// A block's branches: (graph name, torchvision name).
type Branches = &'static [(&'static str, &'static str)];

/// torchvision's InceptionA branches (graph `mixed`, `mixed_1`, `mixed_2`).
const INCEPTION_A: Branches = &[
    ("conv", "branch1x1"),
    ("tower.conv", "branch5x5_1"),
    ("tower.conv_1", "branch5x5_2"),
    ("tower_1.conv", "branch3x3dbl_1"),
    ("tower_1.conv_1", "branch3x3dbl_2"),
    ("tower_1.conv_2", "branch3x3dbl_3"),
    ("tower_2.conv", "branch_pool"),
];
/// InceptionB (graph `mixed_3`).
const INCEPTION_B: Branches = &[
    ("conv", "branch3x3"),
    ("tower.conv", "branch3x3dbl_1"),
    ("tower.conv_1", "branch3x3dbl_2"),
    ("tower.conv_2", "branch3x3dbl_3"),
];
/// InceptionC (graph `mixed_4` … `mixed_7`).
const INCEPTION_C: Branches = &[
    ("conv", "branch1x1"),
    ("tower.conv", "branch7x7_1"),
    ("tower.conv_1", "branch7x7_2"),
    ("tower.conv_2", "branch7x7_3"),
    ("tower_1.conv", "branch7x7dbl_1"),
    ("tower_1.conv_1", "branch7x7dbl_2"),
    ("tower_1.conv_2", "branch7x7dbl_3"),
    ("tower_1.conv_3", "branch7x7dbl_4"),
    ("tower_1.conv_4", "branch7x7dbl_5"),
    ("tower_2.conv", "branch_pool"),
];
/// InceptionD (graph `mixed_8`).
const INCEPTION_D: Branches = &[
    ("tower.conv", "branch3x3_1"),
    ("tower.conv_1", "branch3x3_2"),
    ("tower_1.conv", "branch7x7x3_1"),
    ("tower_1.conv_1", "branch7x7x3_2"),
    ("tower_1.conv_2", "branch7x7x3_3"),
    ("tower_1.conv_3", "branch7x7x3_4"),
];
/// InceptionE (graph `mixed_9`, `mixed_10`).
const INCEPTION_E: Branches = &[
    ("conv", "branch1x1"),
    ("tower_conv", "branch3x3_1"),
    ("tower_mixed_conv", "branch3x3_2a"),
    ("tower_mixed_conv_1", "branch3x3_2b"),
    ("tower_1_conv", "branch3x3dbl_1"),
    ("tower_1_conv_1", "branch3x3dbl_2"),
    ("tower_1_mixed_conv", "branch3x3dbl_3a"),
    ("tower_1_mixed_conv_1", "branch3x3dbl_3b"),
    ("tower_2_conv", "branch_pool"),
];

/// The graph's mixed blocks: graph name, torchvision name, branch table.
const BLOCKS: [(&str, &str, Branches); 11] = [
    ("mixed", "Mixed_5b", INCEPTION_A),
    ("mixed_1", "Mixed_5c", INCEPTION_A),
    ("mixed_2", "Mixed_5d", INCEPTION_A),
    ("mixed_3", "Mixed_6a", INCEPTION_B),
    ("mixed_4", "Mixed_6b", INCEPTION_C),
    ("mixed_5", "Mixed_6c", INCEPTION_C),
    ("mixed_6", "Mixed_6d", INCEPTION_C),
    ("mixed_7", "Mixed_6e", INCEPTION_C),
    ("mixed_8", "Mixed_7a", INCEPTION_D),
    ("mixed_9", "Mixed_7b", INCEPTION_E),
    ("mixed_10", "Mixed_7c", INCEPTION_E),
];

/// torchvision's module path (`Mixed_5b.branch5x5_1`) of the graph's convolution `graph`
/// (`mixed.tower.conv`), which holds `.conv.weight` and `.bn.{weight,bias,running_mean,running_var}`.
pub fn pytorch_fid_module(graph: &str) -> Option<String> {
    if let Some((_, tv)) = STEM.iter().find(|(g, _)| *g == graph) {
        return Some((*tv).to_owned());
    }
    let (block, branch) = graph.split_once('.')?;
    let (_, tv_block, branches) = BLOCKS.iter().find(|(g, _, _)| *g == block)?;
    let (_, tv_branch) = branches.iter().find(|(g, _)| *g == branch)?;
    Some(format!("{tv_block}.{tv_branch}"))
}

/// One converted tensor: name, shape, values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// The f32 values of a checkpoint's entry `(name, shape)`, failing when missing or of another shape.
pub type EntryReader<'a> = dyn FnMut(&str, &[usize]) -> Result<Vec<f32>, MetricsError> + 'a;

/// The graph's 376 tensors from pytorch-fid's entries, with γ folded in as the module doc says.
pub fn convert_pytorch_fid_entries(entry: &mut EntryReader<'_>) -> Result<Vec<NamedTensor>, MetricsError> {
    let mut out = Vec::new();
    for spec in architecture() {
        let module = pytorch_fid_module(&spec.name).expect("every convolution of the graph has a torchvision name");
        let out_channels = [spec.shape[0]];
        let mut weight = entry(&format!("{module}.conv.weight"), &spec.shape)?;
        let gamma = entry(&format!("{module}.bn.weight"), &out_channels)?;
        let beta = entry(&format!("{module}.bn.bias"), &out_channels)?;
        let mut mean = entry(&format!("{module}.bn.running_mean"), &out_channels)?;
        let var = entry(&format!("{module}.bn.running_var"), &out_channels)?;
        let per_channel = weight.len() / gamma.len();
        for (o, &g) in gamma.iter().enumerate() {
            weight[o * per_channel..(o + 1) * per_channel].iter_mut().for_each(|w| *w *= g);
            mean[o] *= g;
        }
        for (part, shape, values) in [
            ("weight", spec.shape.to_vec(), weight),
            ("beta", out_channels.to_vec(), beta),
            ("mean", out_channels.to_vec(), mean),
            ("var", out_channels.to_vec(), var),
        ] {
            out.push((format!("{}.{part}", spec.name), shape, values));
        }
    }
    Ok(out)
}

/// The tensors as a safetensors file laid out as the published one: header `{"__metadata__":…,
/// name:{"dtype","shape","data_offsets"},…}` in name order, padded with spaces to 8 bytes after
/// its u64 length, then the data in the same order. Written here rather than by
/// `safetensors::serialize`, which emits the metadata in hash-map order and so not always the
/// published file's bytes.
pub fn inception_safetensors(tensors: &[NamedTensor]) -> Vec<u8> {
    let mut sorted: Vec<&NamedTensor> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata: Vec<String> = METADATA.iter().map(|(k, v)| format!("\"{k}\":\"{v}\"")).collect();
    let mut header = format!("{{\"__metadata__\":{{{}}}", metadata.join(","));
    let mut offset = 0;
    for (name, shape, values) in &sorted {
        let end = offset + 4 * values.len();
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        header += &format!(
            ",\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            dims.join(",")
        );
        offset = end;
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for (_, _, values) in &sorted {
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    bytes
}

/// A PyTorch checkpoint (zip or legacy format) opened for its f32 entries.
pub struct PytorchCheckpoint<'a> {
    path: &'a Path,
    reader: PytorchReader,
}

impl<'a> PytorchCheckpoint<'a> {
    /// Opens `path`, reading the pickle but no tensor data yet.
    pub fn open(path: &'a Path) -> Result<Self, MetricsError> {
        let reader = PytorchReader::new(path).map_err(|e| {
            MetricsError::Weights(format!(
                "{}: not a PyTorch checkpoint that can be read ({e}); expected pytorch-fid's {PYTORCH_FID_URL}",
                path.display()
            ))
        })?;
        Ok(Self { path, reader })
    }

    /// The values of entry `name`, which must be f32 of shape `shape`.
    pub fn entry(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, MetricsError> {
        let fail = |what: String| MetricsError::Weights(format!("{}: entry {name} {what}", self.path.display()));
        let tensor = self
            .reader
            .get(name)
            .ok_or_else(|| fail("is missing: this is not pytorch-fid's FID Inception state dict".into()))?;
        if tensor.dtype() != DType::F32 || tensor.shape() != shape {
            return Err(fail(format!("is {:?} {:?}, expected F32 {shape:?}", tensor.dtype(), tensor.shape())));
        }
        let bytes = tensor.read().map_err(|e| fail(format!("cannot be read: {e}")))?;
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}

/// Converts the PyTorch checkpoint at `path` (pytorch-fid's release, or a re-save of the same
/// state dict in PyTorch's zip or legacy format) into the bytes of [`INCEPTION_FILE`], which must
/// have the published SHA-256.
pub fn convert_pytorch_fid(path: &Path) -> Result<Vec<u8>, MetricsError> {
    let checkpoint = PytorchCheckpoint::open(path)?;
    let bytes = inception_safetensors(&convert_pytorch_fid_entries(&mut |name, shape| checkpoint.entry(name, shape))?);
    let digest = data::sha256_hex(&bytes);
    if digest != INCEPTION_SHA256 {
        return Err(MetricsError::Weights(format!(
            "{}: converts to an {INCEPTION_FILE} with sha256 {digest}, not the published {INCEPTION_SHA256}: it holds \
             other weights than pytorch-fid's release, and FIDs computed with it would not be comparable",
            path.display()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_is_folded_into_the_weight_and_the_mean() {
        let mut entry = |name: &str, shape: &[usize]| -> Result<Vec<f32>, MetricsError> {
            let n: usize = shape.iter().product();
            Ok(match name.rsplit('.').next() {
                Some("weight") if name.ends_with("bn.weight") => (0..n).map(|o| 1.0 + o as f32).collect(),
                Some("running_mean") => vec![0.5; n],
                _ => vec![2.0; n],
            })
        };
        let tensors = convert_pytorch_fid_entries(&mut entry).unwrap();
        assert_eq!(tensors.len(), 376);
        let find = |name: &str| &tensors.iter().find(|(n, _, _)| n == name).unwrap().2;
        // conv: [32, 3, 3, 3], so output channel o owns 27 weights, scaled by γ_o = 1 + o.
        let weight = find("conv.weight");
        assert_eq!((weight[0], weight[26], weight[27], weight[31 * 27]), (2.0, 2.0, 4.0, 64.0));
        assert_eq!((find("conv.mean")[0], find("conv.mean")[3]), (0.5, 2.0));
        assert_eq!((find("conv.beta")[5], find("conv.var")[5]), (2.0, 2.0));
        let bytes = inception_safetensors(&tensors);
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(file.len(), 376);
        assert_eq!(file.tensor("conv.weight").unwrap().data()[108..112], 4.0f32.to_le_bytes());
    }

    #[test]
    fn a_missing_entry_names_itself() {
        let mut entry = |name: &str, _: &[usize]| -> Result<Vec<f32>, MetricsError> {
            Err(MetricsError::Weights(format!("entry {name} is missing")))
        };
        let e = convert_pytorch_fid_entries(&mut entry).unwrap_err().to_string();
        assert!(e.contains("Conv2d_1a_3x3.conv.weight"), "{e}");
    }
}
