//! The CPU backend: GEMM through the `gemm` crate (AVX2/AVX-512/FMA micro-kernels picked at run
//! time), element-wise and reduction kernels threaded with rayon above a size threshold, the
//! counter-based Gaussian noise stream, training ops and NHWC image ops. Buffers are `Vec<f32>`;
//! slices bound every access, and the GEMMs (raw pointers into the `gemm` crate) check their
//! operands' lengths first.

/// Defines `fn name(args) -> ret` as `body` compiled three times — for AVX-512F, for AVX2 and for
/// the baseline — and run in the widest instance the CPU supports (detected at run time), so the
/// loops inlined into `body` vectorise with it. Each element's result is the same bits on every
/// path: Rust never contracts a · b + c into an FMA, and vector lanes do not reorder a reduction
/// the compiler may not reorder. Optional generics go in brackets after the name.
macro_rules! widest_simd_fn {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident $([$($generics:tt)*])? ($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:expr
    ) => {
        $(#[$attr])*
        $vis fn $name $(<$($generics)*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512 $(<$($generics)*>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body
                }
                #[target_feature(enable = "avx2")]
                fn avx2 $(<$($generics)*>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body
        }
    };
}

mod chacha;
mod elementwise;
mod gemm;
mod image;
pub(crate) mod noise;
#[cfg(test)]
mod tests;
mod training;
mod transpose;

use rayon::prelude::*;

use crate::{check_len, Activation, AdamStep, Backend, GemmShape, GradientNoise, LinearShape, NoiseKey};

/// Below this many elements an element-wise kernel runs on the calling thread: spawning rayon
/// tasks costs more than the work.
const PARALLEL_MIN: usize = 1 << 15;
/// Chunk length for parallel element-wise kernels.
const CHUNK: usize = 1 << 13;

widest_simd_fn! {
    /// Runs `f` in the widest vector instance (see [`widest_simd_fn`]): for short loop bodies.
    /// LLVM does not inline a long body (ChaCha20, Box–Muller, Adam, a sigmoid row) from the
    /// closure into the instances: it stays out of line in baseline SSE2 (seen in the
    /// disassembly), so those kernels name their own instances with [`widest_simd_fn`].
    #[inline(always)]
    fn widest_simd[R, F: FnOnce() -> R](f: F) -> R = f()
}

/// Runs `work` on a thread of rayon's pool (the calling one when it is already in the pool) and
/// returns its result. Called from outside the pool, each of the CPU backend's parallel loops is
/// handed over to the pool and the caller sleeps until it is done: a wake-up each way per loop,
/// about a tenth of a VAE training step at batch 128 on 2 threads (measured with the
/// `vae_train_step` bench). Started here, a whole job's loops begin inside the pool.
pub fn on_pool_thread<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}

/// The vector instruction set the CPU kernels run with on this machine: "AVX-512F", "AVX2" or
/// "baseline" (SSE2), as [`widest_simd_fn`] chooses at run time. The `gemm` crate's micro-kernels
/// choose the same way.
pub fn vector_instructions() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX-512F";
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return "AVX2";
        }
    }
    "baseline"
}

/// The CPU backend. Buffers are `Vec<f32>`; threads come from the current rayon pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl Cpu {
    /// A CPU backend using the current rayon thread pool.
    pub fn new() -> Self {
        Cpu
    }
}

impl Backend for Cpu {
    type Buffer = Vec<f32>;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn zeros(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }

    fn upload(&self, data: &[f32]) -> Vec<f32> {
        data.to_vec()
    }

    fn download(&self, buf: &Vec<f32>) -> Vec<f32> {
        buf.clone()
    }

    fn read(&self, buf: &Vec<f32>, out: &mut [f32]) {
        check_len("read", "buf", buf.len(), out.len());
        out.copy_from_slice(&buf[..out.len()]);
    }

    fn write(&self, buf: &mut Vec<f32>, data: &[f32]) {
        check_len("write", "buf", buf.len(), data.len());
        buf[..data.len()].copy_from_slice(data);
    }

    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn copy(&self, src: &Vec<f32>, dst: &mut Vec<f32>, len: usize) {
        dst[..len].copy_from_slice(&src[..len]);
    }

    fn sync(&self) {}

    fn gemm(&self, shape: GemmShape, a: &Vec<f32>, b: &Vec<f32>, c: &mut Vec<f32>, alpha: f32, beta: f32) {
        gemm::gemm(shape, a, b, c, alpha, beta);
    }

    fn linear(
        &self,
        a: &Vec<f32>,
        w: &Vec<f32>,
        bias: &Vec<f32>,
        out: &mut Vec<f32>,
        shape: LinearShape,
        act: Activation,
    ) {
        gemm::linear(a, w, bias, out, shape, act);
    }

    fn bias_activation(&self, x: &mut Vec<f32>, bias: &Vec<f32>, rows: usize, cols: usize, act: Activation) {
        elementwise::bias_activation(x, bias, rows, cols, act);
    }

    fn activation_backward(&self, grad: &mut Vec<f32>, y: &Vec<f32>, len: usize, act: Activation) {
        elementwise::activation_backward(grad, y, len, act);
    }

    fn activation_curvature(&self, grad: &mut Vec<f32>, y: &Vec<f32>, len: usize, act: Activation) {
        elementwise::activation_curvature(grad, y, len, act);
    }

    fn column_sums(&self, x: &Vec<f32>, rows: usize, cols: usize, out: &mut Vec<f32>, alpha: f32, beta: f32) {
        elementwise::column_sums(x, rows, cols, out, alpha, beta);
    }

    fn axpy(&self, alpha: f32, x: &Vec<f32>, y: &mut Vec<f32>, len: usize) {
        elementwise::axpy(alpha, x, y, len);
    }

    fn fill_standard_normal(&self, out: &mut Vec<f32>, len: usize, key: NoiseKey) {
        let out = &mut out[..len];
        if len < PARALLEL_MIN {
            noise::fill(out, key, 0);
        } else {
            out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| noise::fill(chunk, key, (c * CHUNK) as u64));
        }
    }

    fn adam(
        &self,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        moments: &mut (Vec<f32>, Vec<f32>),
        len: usize,
        step: AdamStep,
        noise: Option<GradientNoise>,
    ) {
        let (m, v) = moments;
        elementwise::adam(param, grad, (m, v), len, step, noise);
    }

    fn all_finite(&self, x: &Vec<f32>, len: usize) -> bool {
        x[..len].iter().all(|v| v.is_finite())
    }
}
