//! Numeric backends for align-fl.
//!
//! [`Backend`] is the small set of f32 operations the rest of the workspace needs: GEMM with
//! transposes, fused bias + activation, activation backward, row/column reductions, the
//! reparameterisation of a diagonal Gaussian, counter-based Gaussian noise and the Adam update;
//! and for Inception features, NHWC image ops: convolution, pooling and bilinear resize.
//! Everything above this crate (`vae`, `federation`, `metrics`) is generic over `B: Backend`, so a
//! new backend is a new module here and nothing else changes.
//!
//! ```
//! use tensor_kernels::{Backend, Cpu, Transpose};
//! let cpu = Cpu::new();
//! let a = cpu.upload(&[1.0, 2.0, 3.0, 4.0]); // 2×2, row-major
//! let b = cpu.upload(&[1.0, 0.0, 0.0, 1.0]);
//! let mut c = cpu.zeros(4);
//! cpu.gemm(2, 2, 2, &a, Transpose::No, &b, Transpose::No, &mut c, 1.0, 0.0);
//! assert_eq!(cpu.download(&c), vec![1.0, 2.0, 3.0, 4.0]);
//! ```

mod chacha;
mod cpu;
mod cpu_image;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod cube;
mod image;
mod noise;

pub use cpu::Cpu;
pub use image::{ChannelSlot, Conv2d, ImageShape, Pool2d, PoolKind};
pub use noise::standard_normal_at;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Buffers on a device plus the f32 operations the project needs.
///
/// Matrices are row-major. Operations take their dimensions explicitly and act on the prefix of
/// the buffers they are given, so a buffer sized for the largest batch serves smaller ones too.
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

    /// C = α·op(A)·op(B) + β·C with op(A) m×k, op(B) k×n, C m×n. With β = 0, C is not read.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &Self::Buffer,
        trans_a: Transpose,
        b: &Self::Buffer,
        trans_b: Transpose,
        c: &mut Self::Buffer,
        alpha: f32,
        beta: f32,
    );
    /// A linear layer with fused activation: out = act(a · wᵀ + bias), with `a` rows × in_dim,
    /// `w` out_dim × in_dim (PyTorch's layout) and `out` rows × out_dim.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        a: &Self::Buffer,
        w: &Self::Buffer,
        bias: &Self::Buffer,
        out: &mut Self::Buffer,
        rows: usize,
        in_dim: usize,
        out_dim: usize,
        act: Activation,
    ) {
        self.gemm(rows, out_dim, in_dim, a, Transpose::No, w, Transpose::Yes, out, 1.0, 0.0);
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
    /// acc\[i\] += ‖δᵢ‖² (‖aᵢ‖² + 1) for the rows of δ (rows × delta_cols) and a (rows × act_cols):
    /// the squared norm of sample i's gradient of a linear layer (weight δᵢaᵢᵀ, bias δᵢ), summed
    /// over layers without leaving the device (ghost clipping: Goodfellow 2015).
    #[allow(clippy::too_many_arguments)]
    fn add_ghost_norms(
        &self,
        delta: &Self::Buffer,
        delta_cols: usize,
        act: &Self::Buffer,
        act_cols: usize,
        rows: usize,
        acc: &mut Self::Buffer,
    );
    /// y ← y + α·x over the first `len` values.
    fn axpy(&self, alpha: f32, x: &Self::Buffer, y: &mut Self::Buffer, len: usize);
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
    /// Fills the first `len` values of `out` with N(0, 1) samples of the counter-based stream
    /// `key` (see [`standard_normal_at`]).
    fn fill_standard_normal(&self, out: &mut Self::Buffer, len: usize, key: NoiseKey);
    /// Per-sample clip factors fᵢ = min(1, C / (‖gᵢ‖ + 10⁻⁶)) from the squared gradient norms
    /// ‖gᵢ‖² of `rows` samples (DP-SGD's clipping, Abadi et al. 2016, Alg. 1).
    fn clip_factors(&self, squared_norms: &Self::Buffer, rows: usize, clip_norm: f64, factors: &mut Self::Buffer);
    /// The clipped per-sample gradient sum of a linear layer, overwriting its gradients:
    /// grad_weight = Σᵢ fᵢ δᵢ aᵢᵀ (out_dim × in_dim) and grad_bias = Σᵢ fᵢ δᵢ, for δ: rows × out_dim,
    /// a: rows × in_dim and f = `factors`. One product of (diag(f) δ)ᵀ with [a | 1].
    #[allow(clippy::too_many_arguments)]
    fn clipped_linear_grads(
        &self,
        delta: &Self::Buffer,
        out_dim: usize,
        act: &Self::Buffer,
        in_dim: usize,
        rows: usize,
        factors: &Self::Buffer,
        grad_weight: &mut Self::Buffer,
        grad_bias: &mut Self::Buffer,
    );
    /// Reparameterisation of a diagonal Gaussian (Kingma & Welling 2014):
    /// `head` is rows×2d holding [μ | log σ²] per row; z = μ + exp(½ log σ²) ⊙ ε.
    fn reparameterize(&self, head: &Self::Buffer, eps: &Self::Buffer, z: &mut Self::Buffer, rows: usize, latent: usize);
    /// Backward of [`Backend::reparameterize`] plus `kl_weight` times the KL divergence to
    /// N(0, I) summed over every element, KL = −½ Σ (1 + log σ² − μ² − σ²).
    /// Writes d(head) from d(z) and returns the summed KL (unweighted) to the host.
    #[allow(clippy::too_many_arguments)]
    fn reparameterize_backward(
        &self,
        head: &Self::Buffer,
        eps: &Self::Buffer,
        grad_z: &Self::Buffer,
        grad_head: &mut Self::Buffer,
        rows: usize,
        latent: usize,
        kl_weight: f32,
    ) -> f64;
    /// One Adam update of `param` from `grad`, with moment buffers `m` and `v`. With `noise`,
    /// the gradient used is scale · (grad + std · zᵢ), zᵢ the noise stream's values: the noising
    /// of a summed DP-SGD gradient fused into the update (`grad` itself is left unchanged).
    #[allow(clippy::too_many_arguments)]
    fn adam(
        &self,
        param: &mut Self::Buffer,
        grad: &Self::Buffer,
        m: &mut Self::Buffer,
        v: &mut Self::Buffer,
        len: usize,
        step: AdamStep,
        noise: Option<GradientNoise>,
    );
    /// Whether every one of the first `len` values is finite.
    fn all_finite(&self, x: &Self::Buffer, len: usize) -> bool;

    /// 2-D convolution of NHWC images with fused bias and activation:
    /// out\[n, y, x, slot.offset + o\] = act(bias\[o\] + Σ weight\[ky, kx, i, o\] · x\[n, y·s + ky − ph, x·s + kx − pw, i\]),
    /// zero padding. `weight` is [kh, kw, in, out]; `out` has `slot.channels` channels per pixel,
    /// of which this op writes `conv.out_channels` from `slot.offset` (a channel concatenation is
    /// one op per branch into its slot).
    #[allow(clippy::too_many_arguments)]
    fn conv2d(
        &self,
        x: &Self::Buffer,
        shape: ImageShape,
        conv: Conv2d,
        weight: &Self::Buffer,
        bias: &Self::Buffer,
        act: Activation,
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
