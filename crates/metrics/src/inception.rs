//! Inception v3 as in TensorFlow's FID graph "2015-12-05" (Szegedy et al. 2016; Heusel et al.
//! 2017), the network behind every standard FID implementation, giving the 2048-d pool3 feature
//! of an image. Architecture, BN folding and preprocessing follow
//! `inception-2015-12-05.md` beside the weights; activations are NHWC on any [`Backend`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};
use tensor_kernels::{Activation, Backend, ChannelSlot, Conv2d, ConvLayer, ImageOps, ImageShape, Pool2d, PoolKind};

use crate::{FeatureStats, MetricsError};

/// File name of the weights.
pub const INCEPTION_FILE: &str = "inception-2015-12-05.safetensors";
/// SHA-256 of [`INCEPTION_FILE`].
pub const INCEPTION_SHA256: &str = "94ca3ab594af59752bc70b9c10df59e9b290c2753c4b1a144ca0a07a330cec6e";
/// The largest Inception weights file read or downloaded, in either format (200 MiB; the
/// converted file is 87 MB, pytorch-fid's release 95.6 MB).
pub const MAX_INCEPTION_BYTES: u64 = 200 << 20;
/// Length of the pool3 feature.
pub const FEATURE_DIM: usize = 2048;
/// Side of the network's input images.
pub const INPUT_SIZE: usize = 299;
/// ε of the graph's batch normalisation.
const BN_EPSILON: f32 = 1e-3;

/// Where the weights come from, for error messages.
const WEIGHTS_ORIGIN: &str = "the FID Inception v3 weights (TensorFlow graph 2015-12-05, the network pytorch-fid \
     and clean-fid port) stored as safetensors with the tensor names of inception-2015-12-05.md; \
     `align-fl models fetch` downloads pytorch-fid's copy and converts it (`--from FILE` converts a copy you have)";

/// The per-user cache of models, searched last and filled by `align-fl models fetch`:
/// `$XDG_CACHE_HOME/align-fl/models`, else `$HOME/.cache/align-fl/models`.
pub fn models_cache_dir() -> Option<PathBuf> {
    let nonempty = |v: &str| std::env::var_os(v).filter(|d| !d.is_empty()).map(PathBuf::from);
    nonempty("XDG_CACHE_HOME")
        .or_else(|| nonempty("HOME").map(|h| h.join(".cache")))
        .map(|c| c.join("align-fl").join("models"))
}

/// Finds the weights: `explicit` (a file, or a folder holding [`INCEPTION_FILE`]), then the
/// folder in `ALIGN_FL_MODELS`, then `./models`, then [`models_cache_dir`].
pub fn locate_inception_weights(explicit: Option<&Path>) -> Result<PathBuf, MetricsError> {
    let in_folder = |p: &Path| if p.is_dir() { p.join(INCEPTION_FILE) } else { p.to_path_buf() };
    if let Some(p) = explicit {
        let file = in_folder(p);
        return if file.is_file() {
            Ok(file)
        } else {
            Err(MetricsError::Weights(format!(
                "{} does not exist; --inception-weights must name {INCEPTION_FILE} (or its folder): {WEIGHTS_ORIGIN}",
                file.display()
            )))
        };
    }
    let mut tried = Vec::new();
    if let Some(dir) = std::env::var_os("ALIGN_FL_MODELS") {
        tried.push(in_folder(Path::new(&dir)));
    }
    tried.push(Path::new("models").join(INCEPTION_FILE));
    tried.extend(models_cache_dir().map(|d| d.join(INCEPTION_FILE)));
    if let Some(found) = tried.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(MetricsError::Weights(format!(
        "not found (looked at {}). Run `align-fl models fetch` once: it downloads pytorch-fid's copy \
         of the FID Inception and converts it (offline, `align-fl models fetch --from FILE` converts a \
         pt_inception-2015-12-05-6726825d.pth you have). Or put {INCEPTION_FILE} (87 MB, sha256 {INCEPTION_SHA256}) \
         in ./models, set ALIGN_FL_MODELS to its folder, or pass --inception-weights FILE.",
        looked.join(", ")
    )))
}

/// One convolution of the graph: name, kernel [out, in, kh, kw], stride, padding [h, w].
pub(crate) struct LayerSpec {
    pub(crate) name: String,
    pub(crate) shape: [usize; 4],
    stride: usize,
    pad: [usize; 2],
}

/// Every convolution of the graph, in order.
pub(crate) fn architecture() -> Vec<LayerSpec> {
    let mut specs = Vec::new();
    // Stride 1 keeps the size ("same" padding) unless `valid`; stride 2 never pads.
    let mut add = |name: String, shape: [usize; 4], stride: usize, valid: bool| {
        let pad = if valid || stride > 1 { [0, 0] } else { [(shape[2] - 1) / 2, (shape[3] - 1) / 2] };
        specs.push(LayerSpec { name, shape, stride, pad });
    };
    add("conv".into(), [32, 3, 3, 3], 2, true);
    add("conv_1".into(), [32, 32, 3, 3], 1, true);
    add("conv_2".into(), [64, 32, 3, 3], 1, false);
    add("conv_3".into(), [80, 64, 1, 1], 1, true);
    add("conv_4".into(), [192, 80, 3, 3], 1, true);
    for (m, cin, pool) in [("mixed", 192, 32), ("mixed_1", 256, 64), ("mixed_2", 288, 64)] {
        add(format!("{m}.conv"), [64, cin, 1, 1], 1, false);
        add(format!("{m}.tower.conv"), [48, cin, 1, 1], 1, false);
        add(format!("{m}.tower.conv_1"), [64, 48, 5, 5], 1, false);
        add(format!("{m}.tower_1.conv"), [64, cin, 1, 1], 1, false);
        add(format!("{m}.tower_1.conv_1"), [96, 64, 3, 3], 1, false);
        add(format!("{m}.tower_1.conv_2"), [96, 96, 3, 3], 1, false);
        add(format!("{m}.tower_2.conv"), [pool, cin, 1, 1], 1, false);
    }
    add("mixed_3.conv".into(), [384, 288, 3, 3], 2, true);
    add("mixed_3.tower.conv".into(), [64, 288, 1, 1], 1, false);
    add("mixed_3.tower.conv_1".into(), [96, 64, 3, 3], 1, false);
    add("mixed_3.tower.conv_2".into(), [96, 96, 3, 3], 2, true);
    for (m, c) in [("mixed_4", 128), ("mixed_5", 160), ("mixed_6", 160), ("mixed_7", 192)] {
        add(format!("{m}.conv"), [192, 768, 1, 1], 1, false);
        add(format!("{m}.tower.conv"), [c, 768, 1, 1], 1, false);
        add(format!("{m}.tower.conv_1"), [c, c, 1, 7], 1, false);
        add(format!("{m}.tower.conv_2"), [192, c, 7, 1], 1, false);
        add(format!("{m}.tower_1.conv"), [c, 768, 1, 1], 1, false);
        add(format!("{m}.tower_1.conv_1"), [c, c, 7, 1], 1, false);
        add(format!("{m}.tower_1.conv_2"), [c, c, 1, 7], 1, false);
        add(format!("{m}.tower_1.conv_3"), [c, c, 7, 1], 1, false);
        add(format!("{m}.tower_1.conv_4"), [192, c, 1, 7], 1, false);
        add(format!("{m}.tower_2.conv"), [192, 768, 1, 1], 1, false);
    }
    add("mixed_8.tower.conv".into(), [192, 768, 1, 1], 1, false);
    add("mixed_8.tower.conv_1".into(), [320, 192, 3, 3], 2, true);
    add("mixed_8.tower_1.conv".into(), [192, 768, 1, 1], 1, false);
    add("mixed_8.tower_1.conv_1".into(), [192, 192, 1, 7], 1, false);
    add("mixed_8.tower_1.conv_2".into(), [192, 192, 7, 1], 1, false);
    add("mixed_8.tower_1.conv_3".into(), [192, 192, 3, 3], 2, true);
    for (m, cin) in [("mixed_9", 1280), ("mixed_10", 2048)] {
        add(format!("{m}.conv"), [320, cin, 1, 1], 1, false);
        add(format!("{m}.tower_conv"), [384, cin, 1, 1], 1, false);
        add(format!("{m}.tower_mixed_conv"), [384, 384, 1, 3], 1, false);
        add(format!("{m}.tower_mixed_conv_1"), [384, 384, 3, 1], 1, false);
        add(format!("{m}.tower_1_conv"), [448, cin, 1, 1], 1, false);
        add(format!("{m}.tower_1_conv_1"), [384, 448, 3, 3], 1, false);
        add(format!("{m}.tower_1_mixed_conv"), [384, 384, 1, 3], 1, false);
        add(format!("{m}.tower_1_mixed_conv_1"), [384, 384, 3, 1], 1, false);
        add(format!("{m}.tower_2_conv"), [192, cin, 1, 1], 1, false);
    }
    specs
}

/// The f32 values of tensor `name` of shape `shape`.
fn tensor(file: &SafeTensors<'_>, path: &Path, name: &str, shape: &[usize]) -> Result<Vec<f32>, MetricsError> {
    let bad = |what: String| MetricsError::Weights(format!("{}: {what}", path.display()));
    let view = file.tensor(name).map_err(|_| bad(format!("tensor {name} is missing; is this {INCEPTION_FILE}?")))?;
    if view.dtype() != Dtype::F32 || view.shape() != shape {
        return Err(bad(format!("tensor {name} is {:?} {:?}, expected F32 {shape:?}", view.dtype(), view.shape())));
    }
    Ok(view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// A convolution with its batch normalisation folded in, ready for [`Backend::conv2d`].
struct FoldedConv<B: ImageOps> {
    conv: Conv2d,
    /// [kh, kw, in, out].
    weight: B::Buffer,
    bias: B::Buffer,
}

/// Inception v3 (FID graph) on a backend.
pub struct Inception<B: ImageOps> {
    backend: B,
    layers: HashMap<String, FoldedConv<B>>,
}

/// A callback that sees named intermediate activations (NHWC) during a forward pass.
pub type Tap<'a, B> = dyn FnMut(&str, ImageShape, &<B as Backend>::Buffer) + 'a;

impl<B: ImageOps> Inception<B> {
    /// Loads `path`: its SHA-256 must be the published [`INCEPTION_SHA256`] (so every FID is
    /// computed with the same network), then [`Inception::from_bytes`].
    pub fn load(backend: &B, path: &Path) -> Result<Self, MetricsError> {
        let bytes = data::read_bounded(path, MAX_INCEPTION_BYTES).map_err(|e| MetricsError::Weights(e.to_string()))?;
        let digest = data::sha256_hex(&bytes);
        if digest != INCEPTION_SHA256 {
            return Err(MetricsError::Weights(format!(
                "{}: sha256 {digest}, expected {INCEPTION_SHA256}: the file is damaged or holds different weights, \
                 and FIDs computed with it would not be comparable; replace it",
                path.display()
            )));
        }
        Self::from_bytes(backend, &bytes, path)
    }

    /// The network from a weights file's bytes (read from `path`, named in errors), checking every
    /// tensor's name and shape and that every value is finite, and folding each batch
    /// normalisation into its convolution: w′ = w / √(var + 10⁻³), b′ = β − mean / √(var + 10⁻³).
    pub fn from_bytes(backend: &B, bytes: &[u8], path: &Path) -> Result<Self, MetricsError> {
        let file = SafeTensors::deserialize(bytes)
            .map_err(|e| MetricsError::Weights(format!("{}: not a safetensors file ({e})", path.display())))?;
        let specs = architecture();
        let expected = specs.len() * 4;
        if file.len() != expected {
            return Err(MetricsError::Weights(format!(
                "{}: {} tensors, expected {expected} (weight, beta, mean, var of {} convolutions)",
                path.display(),
                file.len(),
                specs.len()
            )));
        }
        let mut layers = HashMap::new();
        for spec in specs {
            let [out, cin, kh, kw] = spec.shape;
            let weight = tensor(&file, path, &format!("{}.weight", spec.name), &spec.shape)?;
            let beta = tensor(&file, path, &format!("{}.beta", spec.name), &[out])?;
            let mean = tensor(&file, path, &format!("{}.mean", spec.name), &[out])?;
            let var = tensor(&file, path, &format!("{}.var", spec.name), &[out])?;
            for (what, values) in [("weight", &weight), ("beta", &beta), ("mean", &mean), ("var", &var)] {
                if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                    return Err(MetricsError::Weights(format!(
                        "{}: {}.{what} holds {v}: the weights are damaged; replace the file",
                        path.display(),
                        spec.name
                    )));
                }
            }
            if let Some(v) = var.iter().find(|&&v| v + BN_EPSILON <= 0.0) {
                return Err(MetricsError::Weights(format!(
                    "{}: {}.var holds {v}, a negative variance: the weights are damaged; replace the file",
                    path.display(),
                    spec.name
                )));
            }
            let scale: Vec<f32> = var.iter().map(|v| 1.0 / (v + BN_EPSILON).sqrt()).collect();
            let bias: Vec<f32> = (0..out).map(|o| beta[o] - mean[o] * scale[o]).collect();
            // [out, in, kh, kw] → [kh, kw, in, out], scaled per output channel.
            let mut folded = vec![0.0f32; weight.len()];
            for o in 0..out {
                for i in 0..cin {
                    for y in 0..kh {
                        for x in 0..kw {
                            folded[((y * kw + x) * cin + i) * out + o] =
                                weight[((o * cin + i) * kh + y) * kw + x] * scale[o];
                        }
                    }
                }
            }
            let conv =
                Conv2d { kh, kw, stride: spec.stride, pad_h: spec.pad[0], pad_w: spec.pad[1], out_channels: out };
            layers.insert(spec.name, FoldedConv { conv, weight: backend.upload(&folded), bias: backend.upload(&bias) });
        }
        Ok(Inception { backend: backend.clone(), layers })
    }

    /// Preprocesses n gray (c = 1) or RGB (c = 3) images of one size (NHWC, values in [0, 1],
    /// i.e. u8/255): x·2 − 1, gray replicated to three channels, then bilinear resize to
    /// 299 × 299 (half-pixel centres, no antialias). The affine map is applied before the
    /// resize, with which it commutes (bilinear weights sum to one).
    pub fn preprocess(&self, images: &[f32], shape: ImageShape) -> Result<B::Buffer, MetricsError> {
        if shape.c != 1 && shape.c != 3 {
            return Err(MetricsError::Shape(format!("images must have 1 or 3 channels, not {}", shape.c)));
        }
        if images.len() != shape.len() || shape.h == 0 || shape.w == 0 {
            return Err(MetricsError::Shape(format!("{} image values for shape {shape:?}", images.len())));
        }
        let rgb: Vec<f32> = images
            .chunks(shape.c)
            .flat_map(|px| {
                let v = |i: usize| px[i.min(px.len() - 1)] * 2.0 - 1.0;
                [v(0), v(1), v(2)]
            })
            .collect();
        let three = ImageShape { c: 3, ..shape };
        let mut out = self.backend.zeros(shape.n * INPUT_SIZE * INPUT_SIZE * 3);
        self.backend.resize_bilinear(&self.backend.upload(&rgb), three, INPUT_SIZE, INPUT_SIZE, &mut out);
        Ok(out)
    }

    /// Feature statistics of n images (NHWC, values in [0, 1]) computed `batch` images at a time,
    /// so memory stays flat; `progress` hears the number of images done after each batch.
    pub fn feature_stats(
        &self,
        images: &[f32],
        shape: ImageShape,
        batch: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<FeatureStats, MetricsError> {
        if batch == 0 {
            return Err(MetricsError::Shape("the feature batch size must be at least 1".into()));
        }
        if images.len() != shape.len() {
            return Err(MetricsError::Shape(format!("{} image values for shape {shape:?}", images.len())));
        }
        let mut features = vec![0.0f32; shape.n * FEATURE_DIM];
        let per_image = shape.image_len();
        for first in (0..shape.n).step_by(batch) {
            let n = batch.min(shape.n - first);
            let part = ImageShape { n, ..shape };
            let input = self.preprocess(&images[first * per_image..(first + n) * per_image], part)?;
            let out = self.features(&input, n);
            self.backend.read(&out, &mut features[first * FEATURE_DIM..(first + n) * FEATURE_DIM]);
            progress(first + n);
        }
        FeatureStats::from_features(&features, shape.n, FEATURE_DIM)
    }

    /// The pool3 features (n × 2048) of preprocessed images (n × 299 × 299 × 3, NHWC).
    pub fn features(&self, input: &B::Buffer, n: usize) -> B::Buffer {
        self.forward(input, n, &mut |_, _, _| {})
    }

    /// The forward pass; `tap` sees the stem and block outputs by name ("conv", "pool1",
    /// "mixed" … "mixed_10").
    pub fn forward(&self, input: &B::Buffer, n: usize, tap: &mut Tap<'_, B>) -> B::Buffer {
        let s = ImageShape { n, h: INPUT_SIZE, w: INPUT_SIZE, c: 3 };
        let (x, s) = self.conv("conv", input, s);
        tap("conv", s, &x);
        let (x, s) = self.conv("conv_1", &x, s);
        let (x, s) = self.conv("conv_2", &x, s);
        let (x, s) = self.pool(&x, s, max_pool_stride_2());
        let (x, s) = self.conv("conv_3", &x, s);
        let (x, s) = self.conv("conv_4", &x, s);
        let (mut x, mut s) = self.pool(&x, s, max_pool_stride_2());
        tap("pool1", s, &x);
        for name in ["mixed", "mixed_1", "mixed_2"] {
            (x, s) = self.inception_a(name, &x, s);
            tap(name, s, &x);
        }
        (x, s) = self.inception_b(&x, s);
        tap("mixed_3", s, &x);
        for name in ["mixed_4", "mixed_5", "mixed_6", "mixed_7"] {
            (x, s) = self.inception_c(name, &x, s);
            tap(name, s, &x);
        }
        (x, s) = self.inception_d(&x, s);
        tap("mixed_8", s, &x);
        // The FID graph's quirk: the last block's pool branch is a max pool.
        for (name, kind) in [("mixed_9", PoolKind::Average), ("mixed_10", PoolKind::Max)] {
            (x, s) = self.inception_e(name, &x, s, kind);
            tap(name, s, &x);
        }
        let pool2 = Pool2d { kind: PoolKind::Average, size: 8, stride: 8, pad: 0 };
        self.pool(&x, s, pool2).0
    }

    fn layer(&self, name: &str) -> &FoldedConv<B> {
        // Every name used by the forward pass comes from `architecture()`, checked at load.
        &self.layers[name]
    }

    /// Output shape of layer `name` on input `s`, with `channels` channels per pixel.
    fn conv_shape(&self, name: &str, s: ImageShape, channels: usize) -> ImageShape {
        let (h, w) = self.layer(name).conv.output_hw(s.h, s.w);
        ImageShape { n: s.n, h, w, c: channels }
    }

    /// Layer `name` into a new buffer.
    fn conv(&self, name: &str, x: &B::Buffer, s: ImageShape) -> (B::Buffer, ImageShape) {
        let channels = self.layer(name).conv.out_channels;
        let out_shape = self.conv_shape(name, s, channels);
        let mut out = self.backend.zeros(out_shape.len());
        self.conv_into(name, x, s, &mut out, ChannelSlot::whole(channels));
        (out, out_shape)
    }

    /// Layer `name` into channels `slot` of `out`.
    fn conv_into(&self, name: &str, x: &B::Buffer, s: ImageShape, out: &mut B::Buffer, slot: ChannelSlot) {
        let l = self.layer(name);
        self.backend.conv2d(
            x,
            s,
            l.conv,
            ConvLayer { weight: &l.weight, bias: &l.bias, act: Activation::Relu },
            out,
            slot,
        );
    }

    /// Layers `names` in sequence, the last into channels `slot` of `out`.
    fn chain_into(&self, names: &[String], x: &B::Buffer, s: ImageShape, out: &mut B::Buffer, slot: ChannelSlot) {
        let (last, first) = names.split_last().expect("a non-empty chain");
        let mut current: Option<(B::Buffer, ImageShape)> = None;
        for name in first {
            let (input, shape) = current.as_ref().map_or((x, s), |(b, sh)| (b, *sh));
            current = Some(self.conv(name, input, shape));
        }
        let (input, shape) = current.as_ref().map_or((x, s), |(b, sh)| (b, *sh));
        self.conv_into(last, input, shape, out, slot);
    }

    fn pool(&self, x: &B::Buffer, s: ImageShape, pool: Pool2d) -> (B::Buffer, ImageShape) {
        let (h, w) = pool.output_hw(s.h, s.w);
        let out_shape = ImageShape { h, w, ..s };
        let mut out = self.backend.zeros(out_shape.len());
        self.backend.pool2d(x, s, pool, &mut out, ChannelSlot::whole(s.c));
        (out, out_shape)
    }

    /// A block whose branches are chains of convolutions (after an optional pool), concatenated
    /// along channels in the order given.
    fn block(
        &self,
        x: &B::Buffer,
        s: ImageShape,
        branches: &[(Option<Pool2d>, Vec<String>)],
    ) -> (B::Buffer, ImageShape) {
        // A branch's width is its last layer's output channels, or the input's for a bare pool.
        let widths: Vec<usize> =
            branches.iter().map(|(_, chain)| chain.last().map_or(s.c, |l| self.layer(l).conv.out_channels)).collect();
        let total: usize = widths.iter().sum();
        let out_shape = match &branches[0] {
            (_, chain) if !chain.is_empty() => self.conv_shape(chain.last().expect("non-empty"), s, total),
            (pool, _) => {
                let (h, w) = pool.expect("a branch is a pool or a chain").output_hw(s.h, s.w);
                ImageShape { h, w, c: total, ..s }
            }
        };
        let mut out = self.backend.zeros(out_shape.len());
        let mut offset = 0;
        for ((pool, chain), width) in branches.iter().zip(widths) {
            let slot = ChannelSlot { channels: total, offset };
            match (pool, chain.is_empty()) {
                (Some(p), true) => self.backend.pool2d(x, s, *p, &mut out, slot),
                (Some(p), false) => {
                    let (pooled, ps) = self.pool(x, s, *p);
                    self.chain_into(chain, &pooled, ps, &mut out, slot);
                }
                (None, _) => self.chain_into(chain, x, s, &mut out, slot),
            }
            offset += width;
        }
        (out, out_shape)
    }

    /// InceptionA: 1×1; 1×1 → 5×5; 1×1 → 3×3 → 3×3; avg pool → 1×1.
    fn inception_a(&self, m: &str, x: &B::Buffer, s: ImageShape) -> (B::Buffer, ImageShape) {
        let names = |ls: &[&str]| ls.iter().map(|l| format!("{m}.{l}")).collect::<Vec<_>>();
        self.block(
            x,
            s,
            &[
                (None, names(&["conv"])),
                (None, names(&["tower.conv", "tower.conv_1"])),
                (None, names(&["tower_1.conv", "tower_1.conv_1", "tower_1.conv_2"])),
                (Some(avg_pool_same()), names(&["tower_2.conv"])),
            ],
        )
    }

    /// InceptionB (mixed_3): 3×3 s2; 1×1 → 3×3 → 3×3 s2; max pool s2.
    fn inception_b(&self, x: &B::Buffer, s: ImageShape) -> (B::Buffer, ImageShape) {
        let names = |ls: &[&str]| ls.iter().map(|l| format!("mixed_3.{l}")).collect::<Vec<_>>();
        self.block(
            x,
            s,
            &[
                (None, names(&["conv"])),
                (None, names(&["tower.conv", "tower.conv_1", "tower.conv_2"])),
                (Some(max_pool_stride_2()), vec![]),
            ],
        )
    }

    /// InceptionC: 1×1; 1×1 → 1×7 → 7×1; 1×1 → 7×1 → 1×7 → 7×1 → 1×7; avg pool → 1×1.
    fn inception_c(&self, m: &str, x: &B::Buffer, s: ImageShape) -> (B::Buffer, ImageShape) {
        let names = |ls: &[&str]| ls.iter().map(|l| format!("{m}.{l}")).collect::<Vec<_>>();
        self.block(
            x,
            s,
            &[
                (None, names(&["conv"])),
                (None, names(&["tower.conv", "tower.conv_1", "tower.conv_2"])),
                (
                    None,
                    names(&["tower_1.conv", "tower_1.conv_1", "tower_1.conv_2", "tower_1.conv_3", "tower_1.conv_4"]),
                ),
                (Some(avg_pool_same()), names(&["tower_2.conv"])),
            ],
        )
    }

    /// InceptionD (mixed_8): 1×1 → 3×3 s2; 1×1 → 1×7 → 7×1 → 3×3 s2; max pool s2.
    fn inception_d(&self, x: &B::Buffer, s: ImageShape) -> (B::Buffer, ImageShape) {
        let names = |ls: &[&str]| ls.iter().map(|l| format!("mixed_8.{l}")).collect::<Vec<_>>();
        self.block(
            x,
            s,
            &[
                (None, names(&["tower.conv", "tower.conv_1"])),
                (None, names(&["tower_1.conv", "tower_1.conv_1", "tower_1.conv_2", "tower_1.conv_3"])),
                (Some(max_pool_stride_2()), vec![]),
            ],
        )
    }

    /// InceptionE: 1×1; 1×1 = a → (1×3, 3×1 of a); 1×1 → 3×3 = b → (1×3, 3×1 of b); pool → 1×1.
    /// The split branches share their stem, computed once.
    fn inception_e(&self, m: &str, x: &B::Buffer, s: ImageShape, pool_kind: PoolKind) -> (B::Buffer, ImageShape) {
        let name = |l: &str| format!("{m}.{l}");
        let total = 320 + 4 * 384 + 192;
        let out_shape = ImageShape { c: total, ..s };
        let mut out = self.backend.zeros(out_shape.len());
        let slot = |offset| ChannelSlot { channels: total, offset };
        self.conv_into(&name("conv"), x, s, &mut out, slot(0));
        let (a, sa) = self.conv(&name("tower_conv"), x, s);
        self.conv_into(&name("tower_mixed_conv"), &a, sa, &mut out, slot(320));
        self.conv_into(&name("tower_mixed_conv_1"), &a, sa, &mut out, slot(704));
        let (b1, sb1) = self.conv(&name("tower_1_conv"), x, s);
        let (b, sb) = self.conv(&name("tower_1_conv_1"), &b1, sb1);
        self.conv_into(&name("tower_1_mixed_conv"), &b, sb, &mut out, slot(1088));
        self.conv_into(&name("tower_1_mixed_conv_1"), &b, sb, &mut out, slot(1472));
        let (pooled, ps) = self.pool(x, s, Pool2d { kind: pool_kind, size: 3, stride: 1, pad: 1 });
        self.conv_into(&name("tower_2_conv"), &pooled, ps, &mut out, slot(1856));
        (out, out_shape)
    }
}

/// Max pool 3 × 3, stride 2, no padding.
fn max_pool_stride_2() -> Pool2d {
    Pool2d { kind: PoolKind::Max, size: 3, stride: 2, pad: 0 }
}

/// Average pool 3 × 3, stride 1, pad 1, padding not counted.
fn avg_pool_same() -> Pool2d {
    Pool2d { kind: PoolKind::Average, size: 3, stride: 1, pad: 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor_kernels::Cpu;

    #[test]
    fn the_architecture_has_the_graphs_94_convolutions() {
        let specs = architecture();
        assert_eq!(specs.len(), 94);
        let params: usize = specs.iter().map(|s| s.shape.iter().product::<usize>() + 3 * s.shape[0]).sum();
        assert_eq!(params, 21_802_784, "parameter count of inception-2015-12-05.md");
    }

    #[test]
    fn wrong_or_missing_weights_give_actionable_errors() {
        let dir = std::env::temp_dir().join(format!("align-fl-inception-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = locate_inception_weights(Some(&dir.join("nope.safetensors"))).unwrap_err().to_string();
        assert!(missing.contains("--inception-weights") && missing.contains(INCEPTION_FILE), "{missing}");
        // A safetensors file with one wrong tensor.
        let data = vec![0u8; 4 * 32];
        let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![32], &data).unwrap();
        let bytes = safetensors::serialize(vec![("conv.beta".to_string(), view)], &None).unwrap();
        let path = dir.join(INCEPTION_FILE);
        std::fs::write(&path, bytes).unwrap();
        let wrong = Inception::load(&Cpu::new(), &path).err().expect("refused").to_string();
        assert!(wrong.contains("expected 94ca3ab5"), "loading checks the digest first: {wrong}");
        let bytes = std::fs::read(&path).unwrap();
        let wrong = Inception::from_bytes(&Cpu::new(), &bytes, &path).err().expect("refused").to_string();
        assert!(wrong.contains("1 tensors, expected 376"), "{wrong}");
        let corrupt = Inception::from_bytes(&Cpu::new(), b"not safetensors", &path).err().expect("refused").to_string();
        assert!(corrupt.contains("not a safetensors file"), "{corrupt}");
        // A folder holding the file is accepted.
        assert_eq!(locate_inception_weights(Some(&dir)).unwrap(), path);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
