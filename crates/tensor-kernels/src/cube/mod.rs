//! The CubeCL backend, for GPUs through wgpu (Vulkan, Metal, DX12; Mesa's lavapipe on CPU-only
//! machines) or CUDA: every [`Backend`] op as a hand-written kernel, each tested against the CPU
//! backend on awkward shapes. The Gaussian noise is generated on the device from the same
//! counter-based ChaCha20 stream as the CPU's, bit for bit. Loss sums (squared error, KL) are
//! reduced on the device to one f32 partial per 256 values; the host adds the partials in f64.
//! Where an op has several kernels (GEMM: naive, tiled, register-blocked; convolution: direct,
//! implicit GEMM) they are chosen by name through [`Kernels`] (`ALIGN_FL_GEMM`, `ALIGN_FL_CONV`).

mod kernels;
#[cfg(test)]
mod tests;

use cubecl::prelude::*;
use cubecl::server::Handle;
pub use cubecl::Runtime;

use crate::{
    Activation, AdamStep, Backend, ChannelSlot, Conv2d, GradientNoise, ImageShape, NoiseKey, Pool2d, PoolKind,
    Transpose,
};

/// Units per cube of the element-wise kernels.
const BLOCK: u32 = 256;
/// Side of the GEMM's shared-memory tiles.
const TILE: u32 = 16;
/// Largest cube count along one axis that every runtime accepts.
const MAX_CUBES_X: u32 = 65_535;

/// A buffer of f32 values on the device.
pub struct CubeBuffer {
    handle: Handle,
    /// Values the buffer holds (the allocation is at least one value).
    len: usize,
}

/// The CubeCL backend on wgpu (Vulkan, Metal, DX12; lavapipe without a GPU).
#[cfg(feature = "wgpu")]
pub type Wgpu = Cube<cubecl::wgpu::WgpuRuntime>;
/// The CubeCL backend on CUDA.
#[cfg(feature = "cuda")]
pub type Cuda = Cube<cubecl::cuda::CudaRuntime>;

/// Why the CUDA runtime cannot start on this machine, or None. It needs the NVIDIA driver
/// library (`libcuda.so`) and, to compile its kernels at run time, the CUDA headers under
/// `$CUDA_PATH` or `/usr/local/cuda`.
#[cfg(feature = "cuda")]
pub fn cuda_unavailable() -> Option<String> {
    use std::path::{Path, PathBuf};
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("LD_LIBRARY_PATH").map(|v| std::env::split_paths(&v).collect()).unwrap_or_default();
    dirs.extend(
        [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
            "/usr/local/cuda/lib64",
            "/usr/local/nvidia/lib64",
            "/usr/lib/wsl/lib",
        ]
        .map(PathBuf::from),
    );
    if !dirs.iter().any(|d| d.join("libcuda.so.1").exists() || d.join("libcuda.so").exists()) {
        return Some("no NVIDIA driver library (libcuda.so) on this machine: the CUDA backend needs an NVIDIA GPU and its driver".into());
    }
    let root =
        std::env::var_os("CUDA_PATH").map(PathBuf::from).unwrap_or_else(|| Path::new("/usr/local/cuda").to_path_buf());
    if !root.join("include/cuda.h").exists() {
        return Some(format!(
            "CUDA headers not found at {}: set CUDA_PATH to the CUDA toolkit (the CUDA runtime compiles its kernels at run time)",
            root.join("include").display()
        ));
    }
    None
}

/// The GEMM kernel a [`Cube`] backend launches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GemmKernel {
    /// One unit per element of C, reading global memory only (the reference).
    Naive,
    /// 16 × 16 shared-memory tiles, one element of C per unit.
    Tiled,
    /// 64 × 64 blocks of C, 4 × 4 per unit in registers, from shared-memory tiles; with
    /// 4-wide vector loads when each operand's contiguous dimension is a multiple of 4.
    #[default]
    RegisterBlocked,
}

/// The convolution kernel a [`Cube`] backend launches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvKernel {
    /// One unit per output value, looping over the window and the input channels.
    Direct,
    /// An implicit GEMM (im2col tiles gathered into shared memory, register-blocked).
    #[default]
    ImplicitGemm,
}

/// A named choice among kernel implementations.
pub trait KernelChoice: Sized + Copy + 'static {
    /// The environment variable that selects it.
    const VARIABLE: &'static str;
    /// Every implementation with its name.
    const ALL: &'static [(&'static str, Self)];

    /// The implementation's name.
    fn name(self) -> &'static str
    where
        Self: PartialEq,
    {
        Self::ALL.iter().find(|(_, k)| *k == self).map(|(n, _)| *n).expect("every kernel is named")
    }

    /// The implementation called `name`, or an error listing the names.
    fn from_name(name: &str) -> Result<Self, String> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, k)| *k).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
            format!("{}={name:?} is not a kernel: choose {}", Self::VARIABLE, names.join(", "))
        })
    }
}

impl KernelChoice for GemmKernel {
    const VARIABLE: &'static str = "ALIGN_FL_GEMM";
    const ALL: &'static [(&'static str, Self)] =
        &[("naive", Self::Naive), ("tiled", Self::Tiled), ("register-blocked", Self::RegisterBlocked)];
}

impl KernelChoice for ConvKernel {
    const VARIABLE: &'static str = "ALIGN_FL_CONV";
    const ALL: &'static [(&'static str, Self)] = &[("direct", Self::Direct), ("implicit-gemm", Self::ImplicitGemm)];
}

/// The kernels a [`Cube`] backend launches where an op has several implementations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kernels {
    /// Matrix multiplication.
    pub gemm: GemmKernel,
    /// Convolution.
    pub conv: ConvKernel,
}

impl Kernels {
    /// The defaults, overridden by the environment variables `ALIGN_FL_GEMM` and
    /// `ALIGN_FL_CONV` (an unknown name is an error that lists the names).
    pub fn from_env() -> Result<Self, String> {
        fn read<K: KernelChoice>(default: K) -> Result<K, String> {
            match std::env::var(K::VARIABLE) {
                Ok(name) => K::from_name(name.trim()),
                Err(_) => Ok(default),
            }
        }
        let d = Kernels::default();
        Ok(Kernels { gemm: read(d.gemm)?, conv: read(d.conv)? })
    }
}

/// A CubeCL backend on runtime `R`.
pub struct Cube<R: Runtime> {
    client: ComputeClient<R>,
    kernels: Kernels,
}

impl<R: Runtime> Clone for Cube<R> {
    fn clone(&self) -> Self {
        Cube { client: self.client.clone(), kernels: self.kernels }
    }
}

/// The kernels' activation code: 0 identity, 1 ReLU, 2 sigmoid.
fn activation_code(act: Activation) -> u32 {
    match act {
        Activation::Identity => 0,
        Activation::Relu => 1,
        Activation::Sigmoid => 2,
    }
}

/// A two-dimensional grid of `cubes` cubes (the x axis is capped at [`MAX_CUBES_X`]).
fn grid(cubes: usize) -> CubeCount {
    let cubes = u32::try_from(cubes.max(1)).expect("cube count fits in u32");
    let x = cubes.min(MAX_CUBES_X);
    CubeCount::Static(x, cubes.div_ceil(x), 1)
}

/// Cubes of [`BLOCK`] units covering `units` units.
fn elementwise(units: usize) -> (CubeCount, CubeDim) {
    (grid(units.div_ceil(BLOCK as usize)), CubeDim::new_1d(BLOCK))
}

fn u32_of(v: usize) -> u32 {
    u32::try_from(v).expect("sizes fit in u32 on the device")
}

impl<R: Runtime> Cube<R> {
    /// A backend on `device`.
    pub fn new(device: &R::Device) -> Self {
        Cube { client: R::client(device), kernels: Kernels::default() }
    }

    /// The same device, launching `kernels`.
    pub fn with_kernels(self, kernels: Kernels) -> Self {
        Cube { kernels, ..self }
    }

    /// The kernels this backend launches.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// A backend on the runtime's default device (the first GPU; lavapipe when wgpu finds no
    /// other adapter).
    pub fn default_device() -> Self
    where
        R::Device: Default,
    {
        Self::new(&R::Device::default())
    }

    /// A device buffer of `len` values with unspecified contents, for outputs a kernel writes in
    /// full (no host allocation or transfer, unlike `upload`).
    fn scratch(&self, len: usize) -> CubeBuffer {
        CubeBuffer { handle: self.client.empty(len.max(1) * std::mem::size_of::<f32>()), len }
    }

    /// Waits until every launched kernel has finished (for timing).
    pub fn sync(&self) {
        cubecl::future::block_on(self.client.sync()).expect("device synchronisation");
    }

    /// Writes N(0, 1) values `key.offset … key.offset + len` of the noise stream into `out`,
    /// generated on the device (see `kernels::gaussian_noise`).
    fn gaussian_noise(&self, out: &mut CubeBuffer, len: usize, key: NoiseKey) {
        if len == 0 {
            return;
        }
        // Units start at 16-group (48-word, 3-block) boundaries of the stream.
        let first_group = key.offset / 4 / 16 * 16;
        let block = first_group * 3 / 16;
        let skip = key.offset - first_group * 4;
        let units = (skip as usize + len).div_ceil(64);
        let mut words = [0u32; 8];
        for (w, bytes) in words.iter_mut().zip(key.seed.chunks_exact(4)) {
            *w = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        let key_words = self.client.create_from_slice(u32::as_bytes(&words));
        const UNITS: u32 = 64;
        // SAFETY: unit u writes out[64u + j − skip] only where that index is below `len`; the
        // key buffer holds 8 words.
        unsafe {
            kernels::gaussian_noise::launch_unchecked::<R>(
                &self.client,
                grid(units.div_ceil(UNITS as usize)),
                CubeDim::new_1d(UNITS),
                Self::arg(out),
                u32_of(len),
                u32::try_from(skip).expect("skip below 64"),
                ArrayArg::from_raw_parts(key_words, 8),
                key.stream as u32,
                (key.stream >> 32) as u32,
                block as u32,
                (block >> 32) as u32,
                0,
            )
        }
    }

    fn arg(buf: &CubeBuffer) -> ArrayArg<R> {
        // SAFETY: the handle holds at least `max(len, 1)` f32 values (see `upload`).
        unsafe { ArrayArg::from_raw_parts(buf.handle.clone(), buf.len.max(1)) }
    }
}

impl<R: Runtime> Backend for Cube<R> {
    type Buffer = CubeBuffer;

    fn name(&self) -> &'static str {
        R::name(&self.client)
    }

    /// A buffer holding a copy of `data`.
    fn upload(&self, data: &[f32]) -> CubeBuffer {
        // Zero-length allocations are not portable: hold at least one value.
        let stored: &[f32] = if data.is_empty() { &[0.0] } else { data };
        CubeBuffer { handle: self.client.create_from_slice(f32::as_bytes(stored)), len: data.len() }
    }

    /// A buffer of `len` zeros.
    fn zeros(&self, len: usize) -> CubeBuffer {
        let buf = self.scratch(len);
        let (count, dim) = elementwise(len);
        // SAFETY: indices below `len` of a buffer of at least max(len, 1) values.
        unsafe {
            kernels::fill::launch_unchecked::<f32, R>(&self.client, count, dim, Self::arg(&buf), u32_of(len), 0.0)
        };
        buf
    }

    /// The buffer's contents on the host.
    fn download(&self, buf: &CubeBuffer) -> Vec<f32> {
        let bytes = self.client.read_one(buf.handle.clone()).expect("reading a device buffer");
        f32::from_bytes(&bytes)[..buf.len].to_vec()
    }

    /// C = α·op(A)·op(B) + β·C, as [`crate::Backend::gemm`].
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &CubeBuffer,
        trans_a: Transpose,
        b: &CubeBuffer,
        trans_b: Transpose,
        c: &mut CubeBuffer,
        alpha: f32,
        beta: f32,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        let (a_rs, a_cs) = if trans_a == Transpose::No { (k, 1) } else { (1, m) };
        let (b_rs, b_cs) = if trans_b == Transpose::No { (n, 1) } else { (1, k) };
        // Vector loads where each operand has a contiguous dimension that is a multiple of 4.
        let (a_along_k, b_along_n) = (trans_a == Transpose::No, trans_b == Transpose::No);
        let a_ok = if a_along_k { k.is_multiple_of(4) } else { m.is_multiple_of(4) };
        let b_ok = if b_along_n { n.is_multiple_of(4) } else { k.is_multiple_of(4) };
        if self.kernels.gemm == GemmKernel::RegisterBlocked && k > 0 && a_ok && b_ok {
            // SAFETY: A holds m·k and B k·n values, positive multiples of 4 (whole vectors);
            // every vector index is bounds-checked against m, n and k in the kernel.
            unsafe {
                kernels::gemm_register_blocked_vec4::launch_unchecked::<f32, R>(
                    &self.client,
                    CubeCount::Static(u32_of(n).div_ceil(64), u32_of(m).div_ceil(64), 1),
                    CubeDim::new_2d(16, 16),
                    ArrayArg::from_raw_parts(a.handle.clone(), m * k / 4),
                    ArrayArg::from_raw_parts(b.handle.clone(), k * n / 4),
                    Self::arg(c),
                    u32_of(m),
                    u32_of(n),
                    u32_of(k),
                    alpha,
                    beta,
                    a_along_k,
                    b_along_n,
                )
            };
            return;
        }
        let (m, n, k) = (u32_of(m), u32_of(n), u32_of(k));
        let (a_rs, a_cs, b_rs, b_cs) = (u32_of(a_rs), u32_of(a_cs), u32_of(b_rs), u32_of(b_cs));
        let (a, b, c) = (Self::arg(a), Self::arg(b), Self::arg(c));
        let client = &self.client;
        // SAFETY: every index the kernels form is bounds-checked against m, n and k, which the
        // caller's buffers cover (as the CPU backend asserts).
        unsafe {
            match self.kernels.gemm {
                GemmKernel::Naive => kernels::gemm_naive::launch_unchecked::<f32, R>(
                    client,
                    CubeCount::Static(n.div_ceil(TILE), m.div_ceil(TILE), 1),
                    CubeDim::new_2d(TILE, TILE),
                    a,
                    b,
                    c,
                    m,
                    n,
                    k,
                    a_rs,
                    a_cs,
                    b_rs,
                    b_cs,
                    alpha,
                    beta,
                ),
                GemmKernel::Tiled => kernels::gemm_tiled::launch_unchecked::<f32, R>(
                    client,
                    CubeCount::Static(n.div_ceil(TILE), m.div_ceil(TILE), 1),
                    CubeDim::new_2d(TILE, TILE),
                    a,
                    b,
                    c,
                    m,
                    n,
                    k,
                    a_rs,
                    a_cs,
                    b_rs,
                    b_cs,
                    alpha,
                    beta,
                    TILE,
                ),
                GemmKernel::RegisterBlocked => kernels::gemm_register_blocked::launch_unchecked::<f32, R>(
                    client,
                    CubeCount::Static(n.div_ceil(64), m.div_ceil(64), 1),
                    CubeDim::new_2d(16, 16),
                    a,
                    b,
                    c,
                    m,
                    n,
                    k,
                    a_rs,
                    a_cs,
                    b_rs,
                    b_cs,
                    alpha,
                    beta,
                ),
            }
        }
    }

    /// x ← act(x + bias) row by row, as [`crate::Backend::bias_activation`].
    fn bias_activation(&self, x: &mut CubeBuffer, bias: &CubeBuffer, rows: usize, cols: usize, act: Activation) {
        let len = rows * cols;
        if len == 0 {
            return;
        }
        let (count, dim) = elementwise(len);
        // SAFETY: the kernel touches indices below `len` of x and below `cols` of bias.
        unsafe {
            kernels::bias_activation::launch_unchecked::<f32, R>(
                &self.client,
                count,
                dim,
                Self::arg(x),
                Self::arg(bias),
                u32_of(len),
                u32_of(cols),
                activation_code(act),
            )
        }
    }

    /// grad ← grad ⊙ act′(y), as [`crate::Backend::activation_backward`].
    fn activation_backward(&self, grad: &mut CubeBuffer, y: &CubeBuffer, len: usize, act: Activation) {
        if len == 0 || act == Activation::Identity {
            return;
        }
        let (count, dim) = elementwise(len);
        // SAFETY: indices below `len` of both buffers.
        unsafe {
            kernels::activation_backward::launch_unchecked::<f32, R>(
                &self.client,
                count,
                dim,
                Self::arg(grad),
                Self::arg(y),
                u32_of(len),
                activation_code(act),
            )
        }
    }

    /// acc\[r\] += ‖δ_r‖² (‖a_r‖² + 1), as [`crate::Backend::add_ghost_norms`].
    fn add_ghost_norms(
        &self,
        delta: &CubeBuffer,
        delta_cols: usize,
        act: &CubeBuffer,
        act_cols: usize,
        rows: usize,
        acc: &mut CubeBuffer,
    ) {
        if rows == 0 {
            return;
        }
        const REDUCE: u32 = 128;
        // SAFETY: cube r reads row r (< rows) of δ and a and updates acc[r].
        unsafe {
            kernels::add_ghost_norms::launch_unchecked::<f32, R>(
                &self.client,
                grid(rows),
                CubeDim::new_1d(REDUCE),
                Self::arg(delta),
                Self::arg(act),
                Self::arg(acc),
                u32_of(rows),
                u32_of(delta_cols),
                u32_of(act_cols),
                REDUCE,
            )
        }
    }

    /// out = α·Σᵢ x[i, ·] + β·out, as [`crate::Backend::column_sums`].
    fn column_sums(&self, x: &CubeBuffer, rows: usize, cols: usize, out: &mut CubeBuffer, alpha: f32, beta: f32) {
        if cols == 0 {
            return;
        }
        let (count, dim) = elementwise(cols);
        // SAFETY: unit j reads column j (< cols) of the rows × cols matrix and writes out[j].
        unsafe {
            kernels::column_sums::launch_unchecked::<f32, R>(
                &self.client,
                count,
                dim,
                Self::arg(x),
                Self::arg(out),
                u32_of(rows),
                u32_of(cols),
                alpha,
                beta,
            )
        }
    }

    /// y ← y + α·x, as [`crate::Backend::axpy`].
    fn axpy(&self, alpha: f32, x: &CubeBuffer, y: &mut CubeBuffer, len: usize) {
        if len == 0 {
            return;
        }
        let (count, dim) = elementwise(len);
        // SAFETY: indices below `len` of both buffers.
        unsafe {
            kernels::axpy::launch_unchecked::<f32, R>(
                &self.client,
                count,
                dim,
                alpha,
                Self::arg(x),
                Self::arg(y),
                u32_of(len),
            )
        }
    }

    fn clip_factors(&self, squared_norms: &CubeBuffer, rows: usize, clip_norm: f64, factors: &mut CubeBuffer) {
        if rows == 0 {
            return;
        }
        let (count, dim) = elementwise(rows);
        // SAFETY: indices below rows of both buffers.
        unsafe {
            kernels::clip_factors::launch_unchecked::<f32, R>(
                &self.client,
                count,
                dim,
                Self::arg(squared_norms),
                Self::arg(factors),
                u32_of(rows),
                clip_norm as f32,
            )
        }
    }

    /// One fused kernel: the clip factors scale δ as it is loaded, and the bias gradient is the
    /// product's extra column against a column of ones.
    fn clipped_linear_grads(
        &self,
        delta: &CubeBuffer,
        out_dim: usize,
        act: &CubeBuffer,
        in_dim: usize,
        rows: usize,
        factors: &CubeBuffer,
        grad_weight: &mut CubeBuffer,
        grad_bias: &mut CubeBuffer,
    ) {
        if out_dim == 0 {
            return;
        }
        // SAFETY: δ holds rows·out_dim, a rows·in_dim and factors rows values; the kernel
        // bounds-checks every index against them and writes only below out_dim·in_dim and out_dim.
        unsafe {
            kernels::clipped_linear_grads::launch_unchecked::<f32, R>(
                &self.client,
                CubeCount::Static(u32_of(in_dim + 1).div_ceil(64), u32_of(out_dim).div_ceil(64), 1),
                CubeDim::new_2d(16, 16),
                Self::arg(delta),
                Self::arg(act),
                Self::arg(factors),
                Self::arg(grad_weight),
                Self::arg(grad_bias),
                u32_of(out_dim),
                u32_of(in_dim),
                u32_of(rows),
            )
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn adam(
        &self,
        param: &mut CubeBuffer,
        grad: &CubeBuffer,
        m: &mut CubeBuffer,
        v: &mut CubeBuffer,
        len: usize,
        step: AdamStep,
        noise: Option<GradientNoise>,
    ) {
        if len == 0 {
            return;
        }
        let noisy;
        let grad = match noise {
            None => grad,
            Some(n) => {
                let mut z = self.scratch(len);
                self.gaussian_noise(&mut z, len, n.key);
                let out = self.scratch(len);
                let (count, dim) = elementwise(len);
                // SAFETY: indices below `len` of the three buffers.
                unsafe {
                    kernels::noisy_gradient::launch_unchecked::<f32, R>(
                        &self.client,
                        count,
                        dim,
                        Self::arg(grad),
                        Self::arg(&z),
                        Self::arg(&out),
                        u32_of(len),
                        n.scale,
                        n.std,
                    )
                };
                noisy = out;
                &noisy
            }
        };
        let bc1 = 1.0 - step.beta1.powi(step.t as i32);
        let bc2 = 1.0 - step.beta2.powi(step.t as i32);
        let (count, dim) = elementwise(len);
        // SAFETY: indices below `len` of all four buffers.
        unsafe {
            kernels::adam::launch_unchecked::<f32, R>(
                &self.client,
                count,
                dim,
                Self::arg(param),
                Self::arg(grad),
                Self::arg(m),
                Self::arg(v),
                u32_of(len),
                step.beta1,
                step.beta2,
                step.eps,
                step.lr / bc1,
                bc2.sqrt(),
            )
        }
    }

    fn read(&self, buf: &CubeBuffer, out: &mut [f32]) {
        let all = self.download(buf);
        out.copy_from_slice(&all[..out.len()]);
    }

    fn write(&self, buf: &mut CubeBuffer, data: &[f32]) {
        assert!(data.len() <= buf.len, "write of {} values into a buffer of {}", data.len(), buf.len);
        let src = self.upload(data);
        self.copy(&src, buf, data.len());
    }

    fn len(&self, buf: &CubeBuffer) -> usize {
        buf.len
    }

    fn copy(&self, src: &CubeBuffer, dst: &mut CubeBuffer, len: usize) {
        if len == 0 {
            return;
        }
        let (count, dim) = elementwise(len);
        // SAFETY: indices below `len` of both buffers.
        unsafe {
            kernels::copy::launch_unchecked::<f32, R>(
                &self.client,
                count,
                dim,
                Self::arg(src),
                Self::arg(dst),
                u32_of(len),
            )
        }
    }

    fn activation_curvature(&self, grad: &mut CubeBuffer, y: &CubeBuffer, len: usize, act: Activation) {
        if len == 0 {
            return;
        }
        let (count, dim) = elementwise(len);
        // SAFETY: indices below `len` of both buffers.
        unsafe {
            kernels::activation_curvature::launch_unchecked::<f32, R>(
                &self.client,
                count,
                dim,
                Self::arg(grad),
                Self::arg(y),
                u32_of(len),
                activation_code(act),
            )
        }
    }

    fn squared_error(
        &self,
        pred: &CubeBuffer,
        target: &CubeBuffer,
        grad: &mut CubeBuffer,
        len: usize,
        scale: f32,
    ) -> f64 {
        if len == 0 {
            return 0.0;
        }
        let (count, dim) = elementwise(len);
        let partials = self.scratch(len.div_ceil(BLOCK as usize));
        // SAFETY: indices below `len` of the four buffers.
        unsafe {
            kernels::squared_error::launch_unchecked::<f32, R>(
                &self.client,
                count,
                dim,
                Self::arg(pred),
                Self::arg(target),
                Self::arg(grad),
                Self::arg(&partials),
                u32_of(len),
                scale,
                BLOCK,
            )
        };
        self.download(&partials).iter().map(|&v| f64::from(v)).sum()
    }

    fn fill_standard_normal(&self, out: &mut CubeBuffer, len: usize, key: NoiseKey) {
        assert!(len <= out.len, "fill_standard_normal of {len} values into a buffer of {}", out.len);
        self.gaussian_noise(out, len, key);
    }

    fn reparameterize(&self, head: &CubeBuffer, eps: &CubeBuffer, z: &mut CubeBuffer, rows: usize, latent: usize) {
        let len = rows * latent;
        if len == 0 {
            return;
        }
        let (count, dim) = elementwise(len);
        // SAFETY: unit i < rows·latent reads row i/latent of head and writes z[i].
        unsafe {
            kernels::reparameterize::launch_unchecked::<f32, R>(
                &self.client,
                count,
                dim,
                Self::arg(head),
                Self::arg(eps),
                Self::arg(z),
                u32_of(len),
                u32_of(latent),
            )
        }
    }

    fn reparameterize_backward(
        &self,
        head: &CubeBuffer,
        eps: &CubeBuffer,
        grad_z: &CubeBuffer,
        grad_head: &mut CubeBuffer,
        rows: usize,
        latent: usize,
        kl_weight: f32,
    ) -> f64 {
        let len = rows * latent;
        if len == 0 {
            return 0.0;
        }
        let (count, dim) = elementwise(len);
        let partials = self.scratch(len.div_ceil(BLOCK as usize));
        // SAFETY: unit i < rows·latent touches row i/latent of head and grad_head.
        unsafe {
            kernels::reparameterize_backward::launch_unchecked::<f32, R>(
                &self.client,
                count,
                dim,
                Self::arg(head),
                Self::arg(eps),
                Self::arg(grad_z),
                Self::arg(grad_head),
                Self::arg(&partials),
                u32_of(len),
                u32_of(latent),
                kl_weight,
                BLOCK,
            )
        };
        self.download(&partials).iter().map(|&v| f64::from(v)).sum()
    }

    fn all_finite(&self, x: &CubeBuffer, len: usize) -> bool {
        self.download(x)[..len].iter().all(|v| v.is_finite())
    }

    fn conv2d(
        &self,
        x: &CubeBuffer,
        shape: ImageShape,
        conv: Conv2d,
        weight: &CubeBuffer,
        bias: &CubeBuffer,
        act: Activation,
        out: &mut CubeBuffer,
        slot: ChannelSlot,
    ) {
        let (out_h, out_w) = conv.output_hw(shape.h, shape.w);
        let len = shape.n * out_h * out_w * conv.out_channels;
        assert!(slot.offset + conv.out_channels <= slot.channels, "conv2d: channels exceed the slot");
        if len == 0 {
            return;
        }
        let pixels = shape.n * out_h * out_w;
        let geometry = (
            u32_of(shape.h),
            u32_of(shape.w),
            u32_of(shape.c),
            u32_of(out_h),
            u32_of(out_w),
            u32_of(conv.out_channels),
            u32_of(conv.kh),
            u32_of(conv.kw),
            u32_of(conv.stride),
            u32_of(conv.pad_h),
            u32_of(conv.pad_w),
        );
        let (h, w, c, oh, ow, cout, kh, kw, stride, pad_h, pad_w) = geometry;
        let (x, weight, bias, out) = (Self::arg(x), Self::arg(weight), Self::arg(bias), Self::arg(out));
        let (slot_channels, slot_offset, act) = (u32_of(slot.channels), u32_of(slot.offset), activation_code(act));
        // SAFETY: every input tap is bounds-checked against the image, every weight index against
        // kh·kw·c × cout; outputs stay inside the n × out_h × out_w × slot.channels output.
        unsafe {
            match self.kernels.conv {
                ConvKernel::Direct => {
                    let (count, dim) = elementwise(len);
                    kernels::conv2d_direct::launch_unchecked::<f32, R>(
                        &self.client,
                        count,
                        dim,
                        x,
                        weight,
                        bias,
                        out,
                        u32_of(len),
                        h,
                        w,
                        c,
                        oh,
                        ow,
                        cout,
                        kh,
                        kw,
                        stride,
                        pad_h,
                        pad_w,
                        slot_channels,
                        slot_offset,
                        act,
                    )
                }
                ConvKernel::ImplicitGemm => kernels::conv2d_implicit_gemm::launch_unchecked::<f32, R>(
                    &self.client,
                    CubeCount::Static(cout.div_ceil(64), u32_of(pixels).div_ceil(64), 1),
                    CubeDim::new_2d(16, 16),
                    x,
                    weight,
                    bias,
                    out,
                    u32_of(pixels),
                    h,
                    w,
                    c,
                    oh,
                    ow,
                    cout,
                    kh,
                    kw,
                    stride,
                    pad_h,
                    pad_w,
                    slot_channels,
                    slot_offset,
                    act,
                ),
            }
        }
    }

    fn pool2d(&self, x: &CubeBuffer, shape: ImageShape, pool: Pool2d, out: &mut CubeBuffer, slot: ChannelSlot) {
        let (out_h, out_w) = pool.output_hw(shape.h, shape.w);
        let len = shape.n * out_h * out_w * shape.c;
        assert!(slot.offset + shape.c <= slot.channels, "pool2d: channels exceed the slot");
        if len == 0 {
            return;
        }
        let kind = match pool.kind {
            PoolKind::Max => 0,
            PoolKind::Average => 1,
        };
        let (count, dim) = elementwise(len);
        // SAFETY: windows are clipped to the image; outputs stay inside the output buffer.
        unsafe {
            kernels::pool2d::launch_unchecked::<f32, R>(
                &self.client,
                count,
                dim,
                Self::arg(x),
                Self::arg(out),
                u32_of(len),
                u32_of(shape.h),
                u32_of(shape.w),
                u32_of(shape.c),
                u32_of(out_h),
                u32_of(out_w),
                u32_of(slot.channels),
                u32_of(slot.offset),
                u32_of(pool.size),
                u32_of(pool.stride),
                u32_of(pool.pad),
                kind,
            )
        }
    }

    fn resize_bilinear(&self, x: &CubeBuffer, shape: ImageShape, out_h: usize, out_w: usize, out: &mut CubeBuffer) {
        let len = shape.n * out_h * out_w * shape.c;
        if len == 0 {
            return;
        }
        assert!(shape.h > 0 && shape.w > 0, "resize_bilinear: empty input image");
        let (count, dim) = elementwise(len);
        // SAFETY: source taps are clamped to the image; unit i writes out[i].
        unsafe {
            kernels::resize_bilinear::launch_unchecked::<f32, R>(
                &self.client,
                count,
                dim,
                Self::arg(x),
                Self::arg(out),
                u32_of(len),
                u32_of(shape.h),
                u32_of(shape.w),
                u32_of(shape.c),
                u32_of(out_h),
                u32_of(out_w),
            )
        }
    }
}
