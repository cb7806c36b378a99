//! The CubeCL backend, for GPUs through wgpu (Vulkan, Metal, DX12; Mesa's lavapipe on CPU-only
//! machines) or CUDA. Work in progress: kernels land here op by op, each tested against the CPU
//! backend on awkward shapes; `Cube` implements [`crate::Backend`] once every op has its kernel.

mod kernels;
#[cfg(test)]
mod tests;

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::{Activation, AdamStep, Transpose};

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

/// A CubeCL backend on runtime `R`.
pub struct Cube<R: Runtime> {
    client: ComputeClient<R>,
}

impl<R: Runtime> Clone for Cube<R> {
    fn clone(&self) -> Self {
        Cube { client: self.client.clone() }
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
        Cube { client: R::client(device) }
    }

    /// Waits until every launched kernel has finished (for timing).
    pub fn sync(&self) {
        cubecl::future::block_on(self.client.sync()).expect("device synchronisation");
    }

    fn arg(buf: &CubeBuffer) -> ArrayArg<R> {
        // SAFETY: the handle holds at least `max(len, 1)` f32 values (see `upload`).
        unsafe { ArrayArg::from_raw_parts(buf.handle.clone(), buf.len.max(1)) }
    }

    /// A buffer holding a copy of `data`.
    pub fn upload(&self, data: &[f32]) -> CubeBuffer {
        // Zero-length allocations are not portable: hold at least one value.
        let stored: &[f32] = if data.is_empty() { &[0.0] } else { data };
        CubeBuffer { handle: self.client.create_from_slice(f32::as_bytes(stored)), len: data.len() }
    }

    /// A buffer of `len` zeros.
    pub fn zeros(&self, len: usize) -> CubeBuffer {
        self.upload(&vec![0.0; len])
    }

    /// The buffer's contents on the host.
    pub fn download(&self, buf: &CubeBuffer) -> Vec<f32> {
        let bytes = self.client.read_one(buf.handle.clone()).expect("reading a device buffer");
        f32::from_bytes(&bytes)[..buf.len].to_vec()
    }

    /// C = α·op(A)·op(B) + β·C, as [`crate::Backend::gemm`].
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
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
        let count = CubeCount::Static(u32_of(n).div_ceil(TILE), u32_of(m).div_ceil(TILE), 1);
        // SAFETY: every index the kernel forms is bounds-checked against m, n and k, which the
        // caller's buffers cover (as the CPU backend asserts).
        unsafe {
            kernels::gemm_tiled::launch_unchecked::<f32, R>(
                &self.client,
                count,
                CubeDim::new_2d(TILE, TILE),
                Self::arg(a),
                Self::arg(b),
                Self::arg(c),
                u32_of(m),
                u32_of(n),
                u32_of(k),
                u32_of(a_rs),
                u32_of(a_cs),
                u32_of(b_rs),
                u32_of(b_cs),
                alpha,
                beta,
                TILE,
            )
        }
    }

    /// x ← act(x + bias) row by row, as [`crate::Backend::bias_activation`].
    pub fn bias_activation(&self, x: &mut CubeBuffer, bias: &CubeBuffer, rows: usize, cols: usize, act: Activation) {
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
    pub fn activation_backward(&self, grad: &mut CubeBuffer, y: &CubeBuffer, len: usize, act: Activation) {
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

    /// out[r] = ‖x[r, ·]‖², as [`crate::Backend::row_squared_norms`].
    pub fn row_squared_norms(&self, x: &CubeBuffer, rows: usize, cols: usize, out: &mut CubeBuffer) {
        if rows == 0 {
            return;
        }
        const REDUCE: u32 = 128;
        // SAFETY: cube r reads row r (< rows) of x and writes out[r].
        unsafe {
            kernels::row_squared_norms::launch_unchecked::<f32, R>(
                &self.client,
                grid(rows),
                CubeDim::new_1d(REDUCE),
                Self::arg(x),
                Self::arg(out),
                u32_of(rows),
                u32_of(cols),
                REDUCE,
            )
        }
    }

    /// out = α·Σᵢ x[i, ·] + β·out, as [`crate::Backend::column_sums`].
    pub fn column_sums(&self, x: &CubeBuffer, rows: usize, cols: usize, out: &mut CubeBuffer, alpha: f32, beta: f32) {
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
    pub fn axpy(&self, alpha: f32, x: &CubeBuffer, y: &mut CubeBuffer, len: usize) {
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

    /// x[i, ·] ← x[i, ·]·factors[i], as [`crate::Backend::scale_rows`].
    pub fn scale_rows(&self, x: &mut CubeBuffer, rows: usize, cols: usize, factors: &CubeBuffer) {
        let len = rows * cols;
        if len == 0 {
            return;
        }
        let (count, dim) = elementwise(len);
        // SAFETY: indices below rows·cols of x and below rows of factors.
        unsafe {
            kernels::scale_rows::launch_unchecked::<f32, R>(
                &self.client,
                count,
                dim,
                Self::arg(x),
                Self::arg(factors),
                u32_of(len),
                u32_of(cols),
            )
        }
    }

    /// One Adam step without gradient noise, as [`crate::Backend::adam`] with `noise = None`.
    #[allow(clippy::too_many_arguments)]
    pub fn adam(
        &self,
        param: &mut CubeBuffer,
        grad: &CubeBuffer,
        m: &mut CubeBuffer,
        v: &mut CubeBuffer,
        len: usize,
        step: AdamStep,
    ) {
        if len == 0 {
            return;
        }
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
}
