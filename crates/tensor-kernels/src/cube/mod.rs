//! The CubeCL backend, for GPUs through wgpu (Vulkan, Metal, DX12; Mesa's lavapipe on CPU-only
//! machines) or CUDA: every [`Backend`] op as a hand-written kernel, each tested against the CPU
//! backend on awkward shapes. The Gaussian noise is generated on the device from the same
//! counter-based ChaCha20 stream as the CPU's, bit for bit. Loss sums (squared error, KL) are
//! reduced on the device to one f32 partial per 256 values; the host adds the partials in f64.
//! Where an op has several kernels (GEMM: naive, tiled, register-blocked; convolution: direct,
//! implicit GEMM) they are chosen by name through [`Kernels`] (`ALIGN_FL_GEMM`, `ALIGN_FL_CONV`).
//! Each op group (gemm, elementwise, training, image, noise) is one file holding its kernels and
//! their launchers; every launch first checks each buffer against the length its shape needs
//! (`Cube::arg`), so no kernel can read or write past a buffer.

/// Launches the one-dimensional kernel `$kernel` over `$units` units (`BLOCK` per cube;
/// nothing for none) with the arguments given. Every buffer argument must come from
/// `Cube::arg`, checked against the length the op needs; each such kernel touches only indices
/// below the lengths it is given.
macro_rules! launch_1d {
    ($cube:expr, $kernel:ident, $units:expr, $($arg:expr),+ $(,)?) => {{
        let units: usize = $units;
        if units > 0 {
            let (count, dim) = elementwise_grid(units);
            // SAFETY: the buffers were checked by `Cube::arg`; the kernel bounds every index by
            // the lengths passed to it.
            unsafe { $kernel::launch_unchecked::<f32, R>(&$cube.client, count, dim, $($arg),+) }
        }
    }};
}

mod elementwise;
mod gemm;
mod image;
mod noise;
#[cfg(test)]
mod tests;
mod training;

use cubecl::prelude::*;
use cubecl::server::Handle;
pub use cubecl::Runtime;

use crate::{check_len, Activation, AdamStep, Backend, GemmShape, GradientNoise, NoiseKey};

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
    fn from_name(name: &str) -> Result<Self, UnknownKernel> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, k)| *k).ok_or_else(|| UnknownKernel {
            variable: Self::VARIABLE,
            name: name.to_string(),
            choices: Self::ALL.iter().map(|(n, _)| *n).collect(),
        })
    }
}

/// A kernel name that names no implementation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownKernel {
    /// The environment variable that gave it.
    pub variable: &'static str,
    /// The name given.
    pub name: String,
    /// The names there are.
    pub choices: Vec<&'static str>,
}

impl std::fmt::Display for UnknownKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={:?} is not a kernel: choose {}", self.variable, self.name, self.choices.join(", "))
    }
}

impl std::error::Error for UnknownKernel {}

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
    /// `ALIGN_FL_CONV` (an unknown name is an error that lists the names). The one place the
    /// library reads them; a command line calls it once when it builds the backend.
    pub fn from_env() -> Result<Self, UnknownKernel> {
        fn read<K: KernelChoice>(default: K) -> Result<K, UnknownKernel> {
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
fn elementwise_grid(units: usize) -> (CubeCount, CubeDim) {
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

    /// `f` on the buffer's values, read into the runtime's (pinned) host memory: the values are
    /// copied once more only where `f` copies them.
    fn on_host<T>(&self, buf: &CubeBuffer, f: impl FnOnce(&[f32]) -> T) -> T {
        let bytes = self.client.read_one(buf.handle.clone()).expect("reading a device buffer");
        f(&f32::from_bytes(&bytes)[..buf.len])
    }

    /// A device buffer of `len` values with unspecified contents, for outputs a kernel writes in
    /// full (no host allocation or transfer, unlike `upload`).
    fn scratch(&self, len: usize) -> CubeBuffer {
        CubeBuffer { handle: self.client.empty(len.max(1) * std::mem::size_of::<f32>()), len }
    }

    /// The kernel argument for `buf`, the operand `operand` of `op`, whose shape needs `needed`
    /// values: a shorter buffer is refused before any kernel could touch it (see
    /// `crate::check_len`), and the kernel sees the buffer's true length.
    fn arg(&self, op: &str, operand: &str, buf: &CubeBuffer, needed: usize) -> ArrayArg<R> {
        check_len(op, operand, buf.len, needed);
        // SAFETY: the handle holds at least `max(len, 1)` f32 values (see `upload`, `scratch`).
        unsafe { ArrayArg::from_raw_parts(buf.handle.clone(), buf.len.max(1)) }
    }
}

impl<R: Runtime> Backend for Cube<R> {
    type Buffer = CubeBuffer;

    fn name(&self) -> &'static str {
        R::name(&self.client)
    }

    fn upload(&self, data: &[f32]) -> CubeBuffer {
        // Zero-length allocations are not portable: hold at least one value.
        let stored: &[f32] = if data.is_empty() { &[0.0] } else { data };
        CubeBuffer { handle: self.client.create_from_slice(f32::as_bytes(stored)), len: data.len() }
    }

    fn zeros(&self, len: usize) -> CubeBuffer {
        let buf = self.scratch(len);
        self.launch_fill(&buf, len, 0.0);
        buf
    }

    fn download(&self, buf: &CubeBuffer) -> Vec<f32> {
        self.on_host(buf, <[f32]>::to_vec)
    }

    fn read(&self, buf: &CubeBuffer, out: &mut [f32]) {
        check_len("read", "buf", buf.len, out.len());
        self.on_host(buf, |all| out.copy_from_slice(&all[..out.len()]));
    }

    fn write(&self, buf: &mut CubeBuffer, data: &[f32]) {
        check_len("write", "buf", buf.len, data.len());
        let src = self.upload(data);
        self.copy(&src, buf, data.len());
    }

    fn len(&self, buf: &CubeBuffer) -> usize {
        buf.len
    }

    fn copy(&self, src: &CubeBuffer, dst: &mut CubeBuffer, len: usize) {
        self.launch_copy(src, dst, len);
    }

    fn sync(&self) {
        cubecl::future::block_on(self.client.sync()).expect("device synchronisation");
    }

    fn gemm(&self, shape: GemmShape, a: &CubeBuffer, b: &CubeBuffer, c: &mut CubeBuffer, alpha: f32, beta: f32) {
        self.launch_gemm(shape, a, b, c, alpha, beta);
    }

    fn bias_activation(&self, x: &mut CubeBuffer, bias: &CubeBuffer, rows: usize, cols: usize, act: Activation) {
        self.launch_bias_activation(x, bias, rows, cols, act);
    }

    fn activation_backward(&self, grad: &mut CubeBuffer, y: &CubeBuffer, len: usize, act: Activation) {
        self.launch_activation_backward(grad, y, len, act);
    }

    fn activation_curvature(&self, grad: &mut CubeBuffer, y: &CubeBuffer, len: usize, act: Activation) {
        self.launch_activation_curvature(grad, y, len, act);
    }

    fn column_sums(&self, x: &CubeBuffer, rows: usize, cols: usize, out: &mut CubeBuffer, alpha: f32, beta: f32) {
        self.launch_column_sums(x, rows, cols, out, alpha, beta);
    }

    fn axpy(&self, alpha: f32, x: &CubeBuffer, y: &mut CubeBuffer, len: usize) {
        self.launch_axpy(alpha, x, y, len);
    }

    fn fill_standard_normal(&self, out: &mut CubeBuffer, len: usize, key: NoiseKey) {
        self.launch_gaussian_noise(out, len, key);
    }

    fn adam(
        &self,
        param: &mut CubeBuffer,
        grad: &CubeBuffer,
        moments: &mut (CubeBuffer, CubeBuffer),
        len: usize,
        step: AdamStep,
        noise: Option<GradientNoise>,
    ) {
        self.launch_adam(param, grad, moments, len, step, noise);
    }

    fn all_finite(&self, x: &CubeBuffer, len: usize) -> bool {
        check_len("all_finite", "x", x.len, len);
        self.on_host(x, |all| all[..len].iter().all(|v| v.is_finite()))
    }
}
