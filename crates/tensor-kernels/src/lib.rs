//! Numeric backends for align-fl.
//!
//! Three traits say who needs what. [`Backend`]: buffers, GEMM with transposes, fused bias +
//! activation and their backward, column sums, counter-based Gaussian noise and the Adam
//! update. [`TrainingOps`]: the VAE's losses and reparameterisation, and DP-SGD's ghost norms,
//! clip factors and fused clipped gradients (`vae`, `privacy`, `federation` bound on it).
//! [`ImageOps`]: NHWC convolution, pooling and bilinear resize for the Inception network of
//! FID (`metrics`). Dimensions travel as small shape structs ([`GemmShape`], [`LinearShape`],
//! [`LatentShape`], [`ImageShape`] with [`Conv2d`] / [`Pool2d`]). A new backend is a new module
//! here and nothing else changes.
//!
//! ```
//! use tensor_kernels::{Backend, Cpu, GemmShape};
//! let cpu = Cpu::new();
//! let a = cpu.upload(&[1.0, 2.0, 3.0, 4.0]); // 2×2, row-major
//! let b = cpu.upload(&[1.0, 0.0, 0.0, 1.0]);
//! let mut c = cpu.zeros(4);
//! cpu.gemm(GemmShape::new(2, 2, 2), &a, &b, &mut c, 1.0, 0.0);
//! assert_eq!(cpu.download(&c), vec![1.0, 2.0, 3.0, 4.0]);
//! ```

mod cpu;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod cube;
mod image;
#[cfg(test)]
mod testing;

pub use cpu::noise::standard_normal_at;
pub use cpu::{on_pool_thread, vector_instructions, Cpu};
pub use image::{ChannelSlot, Conv2d, ImageShape, Pool2d, PoolKind};

/// Whether a GEMM operand is used as stored or transposed. Operands are row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transpose {
    /// Use the matrix as stored.
    No,
    /// Use the transpose of the stored matrix.
    Yes,
}

/// Element-wise activation applied after a bias add.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// f(x) = x.
    Identity,
    /// f(x) = max(0, x).
    Relu,
    /// f(x) = 1 / (1 + e^(−x)).
    Sigmoid,
}

/// Hyper-parameters of one Adam step (Kingma & Ba 2015, as in `torch.optim.Adam`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator stabiliser.
    pub eps: f32,
    /// 1-based step count, used for bias correction.
    pub t: u64,
}

impl AdamStep {
    /// PyTorch defaults (β₁ = 0.9, β₂ = 0.999, ε = 1e-8) at learning rate `lr` and step `t`.
    pub fn new(lr: f32, t: u64) -> Self {
        Self { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, t }
    }
}

/// A key for the counter-based Gaussian noise stream: the same key, stream and offset give the
/// same values on every backend and every thread count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NoiseKey {
    /// The 256-bit ChaCha20 key.
    pub seed: [u8; 32],
    /// ChaCha20 stream id: separates independent consumers of one seed.
    pub stream: u64,
    /// Index of the first normal value to produce within the stream.
    pub offset: u64,
}

/// Gaussian noise added to a gradient before an optimiser update: g ← scale · (g + std · z).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradientNoise {
    /// Standard deviation before scaling (σ·C in DP-SGD).
    pub std: f32,
    /// Factor applied after adding the noise (1/m in DP-SGD).
    pub scale: f32,
    /// The noise stream, positioned at this tensor's first value.
    pub key: NoiseKey,
}

impl NoiseKey {
    /// A key whose ChaCha20 seed is expanded from a u64 (reproducible mode), as
    /// `ChaCha20Rng::seed_from_u64` does.
    pub fn from_u64(seed: u64, stream: u64) -> Self {
        use rand::SeedableRng;
        NoiseKey { seed: rand_chacha::ChaCha20Rng::seed_from_u64(seed).get_seed(), stream, offset: 0 }
    }
}

/// Dimensions of C = α·op(A)·op(B) + β·C: op(A) is m × k, op(B) k × n, C m × n, all row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    /// Rows of op(A) and C.
    pub m: usize,
    /// Columns of op(B) and C.
    pub n: usize,
    /// Columns of op(A), rows of op(B).
    pub k: usize,
    /// Whether A is stored transposed (k × m).
    pub trans_a: Transpose,
    /// Whether B is stored transposed (n × k).
    pub trans_b: Transpose,
}

impl GemmShape {
    /// m × k times k × n, neither operand transposed.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        GemmShape { m, n, k, trans_a: Transpose::No, trans_b: Transpose::No }
    }

    /// The same product with the operands' storage given.
    pub fn transposed(self, trans_a: Transpose, trans_b: Transpose) -> Self {
        GemmShape { trans_a, trans_b, ..self }
    }
}

/// A batch through a linear layer: `rows` inputs of `in_dim` values, outputs (and output
/// gradients δ) of `out_dim`, weight out_dim × in_dim (PyTorch's layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    /// Samples in the batch.
    pub rows: usize,
    /// Input width.
    pub in_dim: usize,
    /// Output width.
    pub out_dim: usize,
}

/// A batch of diagonal-Gaussian latents: `rows` samples of `latent` dimensions; the encoder head
/// holding [μ | log σ²] is rows × 2·latent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatentShape {
    /// Samples in the batch.
    pub rows: usize,
    /// Latent dimensions.
    pub latent: usize,
}

/// A convolution layer's parameters and fused activation: `weight` is [kh, kw, in, out], `bias`
/// one value per output channel.
#[derive(Clone, Copy, Debug)]
pub struct ConvLayer<'a, T> {
    /// The kernel.
    pub weight: &'a T,
    /// The bias.
    pub bias: &'a T,
    /// Applied after the bias.
    pub act: Activation,
}

/// Refuses a buffer shorter than an op's shape needs, before any kernel could read or write past
/// it: a panic naming the op, the operand and both lengths (a caller's bug, as an out-of-range
/// slice index is).
#[track_caller]
pub(crate) fn check_len(op: &str, operand: &str, held: usize, needed: usize) {
    assert!(
        held >= needed,
        "{op}: buffer `{operand}` holds {held} values but the shape needs {needed}; the buffer is too short"
    );
}

/// Buffers on a device plus the element-wise, GEMM, noise and optimiser operations every model
/// needs.
///
/// Matrices are row-major. Operations take their dimensions explicitly and act on the prefix of
/// the buffers they are given, so a buffer sized for the largest batch serves smaller ones too;
/// a buffer shorter than the dimensions need is refused (see each backend). Whether a result
/// below `f32::MIN_POSITIVE` in magnitude is kept or flushed to zero is the backend's choice
/// (the CPU flushes activations, their gradients and Adam's moments).
pub trait Backend: Clone + Send + Sync + 'static {
    /// A device buffer of f32 values.
    type Buffer: Send + Sync;

    /// Short name for reports ("cpu", "wgpu", "cuda").
    fn name(&self) -> &'static str;
    /// A buffer of `len` zeros.
    fn zeros(&self, len: usize) -> Self::Buffer;
    /// A buffer holding a copy of `data`.
    fn upload(&self, data: &[f32]) -> Self::Buffer;
    /// The buffer's contents copied to the host.
    fn download(&self, buf: &Self::Buffer) -> Vec<f32>;
    /// Copies the first `out.len()` values of `buf` to the host.
    fn read(&self, buf: &Self::Buffer, out: &mut [f32]);
    /// Overwrites the first `data.len()` values of `buf` with `data`.
    fn write(&self, buf: &mut Self::Buffer, data: &[f32]);
    /// Number of f32 values the buffer holds.
    fn len(&self, buf: &Self::Buffer) -> usize;
    /// Copies the first `len` values of `src` into `dst`.
    fn copy(&self, src: &Self::Buffer, dst: &mut Self::Buffer, len: usize);
    /// Waits until every operation issued so far has finished (for timing; the CPU's ops finish
    /// before they return).
    fn sync(&self);

    /// C = α·op(A)·op(B) + β·C. With β = 0, C is not read.
    fn gemm(&self, shape: GemmShape, a: &Self::Buffer, b: &Self::Buffer, c: &mut Self::Buffer, alpha: f32, beta: f32);
    /// A linear layer with fused activation: out = act(a · wᵀ + bias), with `a` rows × in_dim,
    /// `w` out_dim × in_dim and `out` rows × out_dim.
    fn linear(
        &self,
        a: &Self::Buffer,
        w: &Self::Buffer,
        bias: &Self::Buffer,
        out: &mut Self::Buffer,
        shape: LinearShape,
        act: Activation,
    ) {
        let LinearShape { rows, in_dim, out_dim } = shape;
        self.gemm(GemmShape::new(rows, out_dim, in_dim).transposed(Transpose::No, Transpose::Yes), a, w, out, 1.0, 0.0);
        self.bias_activation(out, bias, rows, out_dim, act);
    }
    /// x\[i, j\] ← act(x\[i, j\] + bias\[j\]) for a rows×cols matrix.
    fn bias_activation(&self, x: &mut Self::Buffer, bias: &Self::Buffer, rows: usize, cols: usize, act: Activation);
    /// grad\[i\] ← grad\[i\] · act′ evaluated through the activation's output `y` (ReLU: y > 0,
    /// sigmoid: y(1 − y)), for the first `len` values.
    fn activation_backward(&self, grad: &mut Self::Buffer, y: &Self::Buffer, len: usize, act: Activation);
    /// grad\[i\] ← grad\[i\] · act″ evaluated through the output `y` (sigmoid: y(1 − y)(1 − 2y);
    /// ReLU and identity: 0 almost everywhere): the curvature term of a double backward.
    fn activation_curvature(&self, grad: &mut Self::Buffer, y: &Self::Buffer, len: usize, act: Activation);
    /// out\[j\] = α·Σᵢ x\[i, j\] + β·out\[j\] (the bias gradient of a linear layer).
    fn column_sums(&self, x: &Self::Buffer, rows: usize, cols: usize, out: &mut Self::Buffer, alpha: f32, beta: f32);
    /// y ← y + α·x over the first `len` values.
    fn axpy(&self, alpha: f32, x: &Self::Buffer, y: &mut Self::Buffer, len: usize);
    /// Fills the first `len` values of `out` with N(0, 1) samples of the counter-based stream
    /// `key` (see [`standard_normal_at`]).
    fn fill_standard_normal(&self, out: &mut Self::Buffer, len: usize, key: NoiseKey);
    /// One Adam update of the first `len` values of `param` from `grad`, with the first and
    /// second moment buffers `moments`. With `noise`, the gradient used is
    /// scale · (grad + std · zᵢ), zᵢ the noise stream's values: the noising of a summed DP-SGD
    /// gradient fused into the update (`grad` itself is left unchanged).
    fn adam(
        &self,
        param: &mut Self::Buffer,
        grad: &Self::Buffer,
        moments: &mut (Self::Buffer, Self::Buffer),
        len: usize,
        step: AdamStep,
        noise: Option<GradientNoise>,
    );
    /// Whether every one of the first `len` values is finite.
    fn all_finite(&self, x: &Self::Buffer, len: usize) -> bool;
}

/// The ops of VAE training: losses, the reparameterisation, and DP-SGD's per-sample clipping.
pub trait TrainingOps: Backend {
    /// Squared error Σ (pred − target)² over the first `len` values, returned to the host, and
    /// grad = scale · 2 (pred − target).
    fn squared_error(
        &self,
        pred: &Self::Buffer,
        target: &Self::Buffer,
        grad: &mut Self::Buffer,
        len: usize,
        scale: f32,
    ) -> f64;
    /// Reparameterisation of a diagonal Gaussian (Kingma & Welling 2014): `head` holds
    /// [μ | log σ²] per row; z = μ + exp(½ log σ²) ⊙ ε.
    fn reparameterize(&self, head: &Self::Buffer, eps: &Self::Buffer, z: &mut Self::Buffer, shape: LatentShape);
    /// Backward of [`TrainingOps::reparameterize`] plus `kl_weight` times the KL divergence to
    /// N(0, I) summed over every element, KL = −½ Σ (1 + log σ² − μ² − σ²).
    /// Writes d(head) from d(z) and returns the summed KL (unweighted) to the host.
    fn reparameterize_backward(
        &self,
        head: &Self::Buffer,
        eps: &Self::Buffer,
        grad_z: &Self::Buffer,
        grad_head: &mut Self::Buffer,
        shape: LatentShape,
        kl_weight: f32,
    ) -> f64;
    /// acc\[i\] += ‖δᵢ‖² (‖aᵢ‖² + 1) for the rows of δ (rows × out_dim) and a (rows × in_dim):
    /// the squared norm of sample i's gradient of a linear layer (weight δᵢaᵢᵀ, bias δᵢ), summed
    /// over layers without leaving the device (ghost clipping: Goodfellow 2015).
    fn add_ghost_norms(&self, delta: &Self::Buffer, act: &Self::Buffer, shape: LinearShape, acc: &mut Self::Buffer);
    /// Per-sample clip factors fᵢ = min(1, C / (‖gᵢ‖ + 10⁻⁶)) from the squared gradient norms
    /// ‖gᵢ‖² of `rows` samples (DP-SGD's clipping, Abadi et al. 2016, Alg. 1).
    fn clip_factors(&self, squared_norms: &Self::Buffer, rows: usize, clip_norm: f64, factors: &mut Self::Buffer);
    /// The clipped per-sample gradient sum of a linear layer, overwriting its gradients:
    /// grad_weight = Σᵢ fᵢ δᵢ aᵢᵀ (out_dim × in_dim) and grad_bias = Σᵢ fᵢ δᵢ, for δ: rows × out_dim,
    /// a: rows × in_dim and f = `factors`. One product of (diag(f) δ)ᵀ with [a | 1].
    fn clipped_linear_grads(
        &self,
        delta: &Self::Buffer,
        act: &Self::Buffer,
        shape: LinearShape,
        factors: &Self::Buffer,
        grad_weight: &mut Self::Buffer,
        grad_bias: &mut Self::Buffer,
    );
}

/// NHWC image ops, for the Inception network behind FID.
pub trait ImageOps: Backend {
    /// 2-D convolution of NHWC images with fused bias and activation:
    /// out\[n, y, x, slot.offset + o\] = act(bias\[o\] + Σ weight\[ky, kx, i, o\] · x\[n, y·s + ky − ph, x·s + kx − pw, i\]),
    /// zero padding. `out` has `slot.channels` channels per pixel, of which this op writes
    /// `conv.out_channels` from `slot.offset` (a channel concatenation is one op per branch into
    /// its slot).
    fn conv2d(
        &self,
        x: &Self::Buffer,
        shape: ImageShape,
        conv: Conv2d,
        layer: ConvLayer<'_, Self::Buffer>,
        out: &mut Self::Buffer,
        slot: ChannelSlot,
    );
    /// Max or average pooling of NHWC images into channels `slot.offset ..` of `out` (see
    /// [`Pool2d`] for the padding rules).
    fn pool2d(&self, x: &Self::Buffer, shape: ImageShape, pool: Pool2d, out: &mut Self::Buffer, slot: ChannelSlot);
    /// Bilinear resize of NHWC images to out_h × out_w with half-pixel centres and no
    /// antialiasing (PyTorch `interpolate(mode="bilinear", align_corners=False)`).
    fn resize_bilinear(&self, x: &Self::Buffer, shape: ImageShape, out_h: usize, out_w: usize, out: &mut Self::Buffer);
}
