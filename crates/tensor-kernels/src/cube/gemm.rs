//! GEMM kernels and their launcher: naive (the reference), 16 × 16 shared-memory tiles, and the
//! register-blocked 64 × 64 product whose pieces — [`zeroed_block`], [`multiply_tiles`] (the
//! inner loop, written once) and [`store_block`] — the fused clipped-gradient and the
//! implicit-GEMM convolution kernels share.

use cubecl::prelude::*;

use super::{u32_of, Cube, CubeBuffer, GemmKernel, TILE};
use crate::{check_len, GemmShape, Transpose};

/// C = α·op(A)·op(B) + β·C as [`gemm_tiled`], one unit per element of C reading A and B straight
/// from global memory: the reference the tiled kernels are measured against.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_naive<F: Float + CubeElement>(
    a: &Array<F>,
    b: &Array<F>,
    c: &mut Array<F>,
    m: u32,
    n: u32,
    k: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    alpha: F,
    beta: F,
) {
    let row = CUBE_POS_Y * CUBE_DIM_Y + UNIT_POS_Y;
    let col = CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X;
    if row < m && col < n {
        let mut acc = F::new(0.0);
        for l in 0..k {
            acc += a[(row * a_rs + l * a_cs) as usize] * b[(l * b_rs + col * b_cs) as usize];
        }
        let idx = (row * n + col) as usize;
        if beta == F::new(0.0) {
            c[idx] = alpha * acc;
        } else {
            c[idx] = alpha * acc + beta * c[idx];
        }
    }
}

/// C = α·op(A)·op(B) + β·C (C m × n row-major; element (i, l) of op(A) at a[i·a_rs + l·a_cs],
/// (l, j) of op(B) at b[l·b_rs + j·b_cs], so the strides express the transposes). Each cube
/// computes one tile × tile block of C through shared-memory tiles of A and B; with β = 0, C
/// is not read.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil)] // Kernel code: plain integer ops.
pub(super) fn gemm_tiled<F: Float + CubeElement>(
    a: &Array<F>,
    b: &Array<F>,
    c: &mut Array<F>,
    m: u32,
    n: u32,
    k: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    alpha: F,
    beta: F,
    #[comptime] tile: u32,
) {
    let mut a_s = SharedMemory::<F>::new((tile * tile) as usize);
    let mut b_s = SharedMemory::<F>::new((tile * tile) as usize);
    let tx = UNIT_POS_X;
    let ty = UNIT_POS_Y;
    let row = CUBE_POS_Y * tile + ty;
    let col = CUBE_POS_X * tile + tx;
    let mut acc = F::new(0.0);
    let tiles = (k + tile - 1) / tile;
    for t in 0..tiles {
        let a_col = t * tile + tx;
        let b_row = t * tile + ty;
        let s = (ty * tile + tx) as usize;
        if row < m && a_col < k {
            a_s[s] = a[(row * a_rs + a_col * a_cs) as usize];
        } else {
            a_s[s] = F::new(0.0);
        }
        if b_row < k && col < n {
            b_s[s] = b[(b_row * b_rs + col * b_cs) as usize];
        } else {
            b_s[s] = F::new(0.0);
        }
        sync_cube();
        #[unroll]
        for i in 0..tile {
            acc += a_s[(ty * tile + i) as usize] * b_s[(i * tile + tx) as usize];
        }
        sync_cube();
    }
    if row < m && col < n {
        let idx = (row * n + col) as usize;
        if beta == F::new(0.0) {
            c[idx] = alpha * acc;
        } else {
            c[idx] = alpha * acc + beta * c[idx];
        }
    }
}

/// A unit's 4 × 4 accumulators of a register-blocked product, zeroed.
#[cube]
pub(super) fn zeroed_block<F: Float + CubeElement>() -> Array<F> {
    let mut acc = Array::<F>::new(16usize);
    #[unroll]
    for i in 0..16usize {
        acc[i] = F::new(0.0);
    }
    acc
}

/// C[row, col] = α·acc + β·C[row, col] for the unit's 4 × 4 outputs (rows row0 + ty + 16i,
/// columns col0 + tx + 16j) inside m × n; with β = 0, C is not read.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn store_block<F: Float + CubeElement>(
    c: &mut Array<F>,
    acc: &Array<F>,
    row0: u32,
    col0: u32,
    m: u32,
    n: u32,
    alpha: F,
    beta: F,
) {
    #[unroll]
    for i in 0..4u32 {
        let row = row0 + UNIT_POS_Y + 16 * i;
        #[unroll]
        for j in 0..4u32 {
            let col = col0 + UNIT_POS_X + 16 * j;
            if row < m && col < n {
                let idx = (row * n + col) as usize;
                let v = alpha * acc[(i * 4 + j) as usize];
                if beta == F::new(0.0) {
                    c[idx] = v;
                } else {
                    c[idx] = v + beta * c[idx];
                }
            }
        }
    }
}

/// One 16-deep step of a 64 × 64 register-blocked product: acc[4i + j] += Σ_d a_s[(ty + 16i)·16
/// + d] · b_s[d·64 + tx + 16j], from a 64 × 16 tile of the left matrix and a 16 × 64 tile of the
/// right one in shared memory; each value read feeds four multiply-adds.
#[cube]
pub(super) fn multiply_tiles<F: Float + CubeElement>(
    a_s: &SharedMemory<F>,
    b_s: &SharedMemory<F>,
    acc: &mut Array<F>,
    tx: u32,
    ty: u32,
) {
    let mut a_r = Array::<F>::new(4usize);
    let mut b_r = Array::<F>::new(4usize);
    #[unroll]
    for d in 0..16u32 {
        #[unroll]
        for i in 0..4u32 {
            a_r[i as usize] = a_s[((ty + 16 * i) * 16 + d) as usize];
            b_r[i as usize] = b_s[(d * 64 + tx + 16 * i) as usize];
        }
        #[unroll]
        for i in 0..4usize {
            #[unroll]
            for j in 0..4usize {
                acc[i * 4 + j] += a_r[i] * b_r[j];
            }
        }
    }
}

/// C = α·op(A)·op(B) + β·C as [`gemm_tiled`], register-blocked: a cube of 16 × 16 units computes
/// a 64 × 64 block of C, each unit a 4 × 4 grid of it (rows ty + 16i, columns tx + 16j) held in
/// registers, from 64 × 16 and 16 × 64 shared-memory tiles of op(A) and op(B). Each value read
/// from shared memory feeds four multiply-adds instead of one.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_register_blocked<F: Float + CubeElement>(
    a: &Array<F>,
    b: &Array<F>,
    c: &mut Array<F>,
    m: u32,
    n: u32,
    k: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    alpha: F,
    beta: F,
) {
    // Block 64 × 64, depth 16, 256 units (4 loads of each tile per unit).
    let mut a_s = SharedMemory::<F>::new(1024usize);
    let mut b_s = SharedMemory::<F>::new(1024usize);
    let tx = UNIT_POS_X;
    let ty = UNIT_POS_Y;
    let t = ty * 16 + tx;
    let row0 = CUBE_POS_Y * 64;
    let col0 = CUBE_POS_X * 64;
    let mut acc = zeroed_block::<F>();
    let mut k0 = 0u32;
    while k0 < k {
        #[unroll]
        for l in 0..4u32 {
            let idx = t + 256 * l;
            // op(A) tile: row idx / 16, depth idx % 16.
            let (r, d) = (idx / 16, idx % 16);
            let (gr, gd) = (row0 + r, k0 + d);
            let mut va = F::new(0.0);
            if gr < m && gd < k {
                va = a[(gr * a_rs + gd * a_cs) as usize];
            }
            a_s[idx as usize] = va;
            // op(B) tile: depth idx / 64, column idx % 64.
            let (d, cc) = (idx / 64, idx % 64);
            let (gd, gc) = (k0 + d, col0 + cc);
            let mut vb = F::new(0.0);
            if gd < k && gc < n {
                vb = b[(gd * b_rs + gc * b_cs) as usize];
            }
            b_s[idx as usize] = vb;
        }
        sync_cube();
        multiply_tiles::<F>(&a_s, &b_s, &mut acc, tx, ty);
        sync_cube();
        k0 += 16;
    }
    store_block::<F>(c, &acc, row0, col0, m, n, alpha, beta);
}

/// Fills a row-major (1024 / q_tile) × q_tile shared-memory tile with element (p, q) of a p_lim ×
/// q_lim matrix at offset (p0, q0) (zeros outside), one 4-wide vector per unit t < 256. The matrix
/// is stored with q contiguous (`along_q`: element at p·q_lim + q, q_lim a multiple of 4) or with
/// p contiguous (element at q·p_lim + p, p_lim a multiple of 4), so four consecutive values are
/// all inside or all outside.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_tile_vec4<F: Float + CubeElement>(
    src: &Array<Vector<F, Const<4>>>,
    tile: &mut SharedMemory<F>,
    t: u32,
    p0: u32,
    q0: u32,
    p_lim: u32,
    q_lim: u32,
    #[comptime] q_tile: u32,
    #[comptime] along_q: bool,
) {
    let mut v = Vector::<F, Const<4>>::new(F::new(0.0));
    if along_q {
        let (p, q) = (t / (q_tile / 4), 4 * (t % (q_tile / 4)));
        if p0 + p < p_lim && q0 + q < q_lim {
            v = src[(((p0 + p) * q_lim + q0 + q) / 4) as usize];
        }
        #[unroll]
        for j in 0..4u32 {
            tile[(p * q_tile + q + j) as usize] = v[j as usize];
        }
    } else {
        let per_column = 1024 / q_tile / 4;
        let (q, p) = (t / per_column, 4 * (t % per_column));
        if p0 + p < p_lim && q0 + q < q_lim {
            v = src[(((q0 + q) * p_lim + p0 + p) / 4) as usize];
        }
        #[unroll]
        for j in 0..4u32 {
            tile[((p + j) * q_tile + q) as usize] = v[j as usize];
        }
    }
}

/// [`gemm_register_blocked`] with 4-wide vector loads: each unit fills its share of the
/// shared-memory tiles with one vector from op(A) and one from op(B) instead of four scalars.
/// op(A) is read along k when A is m × k row-major (`a_along_k`; k a multiple of 4), else along m
/// from A stored k × m (m a multiple of 4); op(B) along n when B is k × n row-major
/// (`b_along_n`; n a multiple of 4), else along k from B stored n × k (k a multiple of 4).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_register_blocked_vec4<F: Float + CubeElement>(
    a: &Array<Vector<F, Const<4>>>,
    b: &Array<Vector<F, Const<4>>>,
    c: &mut Array<F>,
    m: u32,
    n: u32,
    k: u32,
    alpha: F,
    beta: F,
    #[comptime] a_along_k: bool,
    #[comptime] b_along_n: bool,
) {
    let mut a_s = SharedMemory::<F>::new(1024usize);
    let mut b_s = SharedMemory::<F>::new(1024usize);
    let tx = UNIT_POS_X;
    let ty = UNIT_POS_Y;
    let t = ty * 16 + tx;
    let row0 = CUBE_POS_Y * 64;
    let col0 = CUBE_POS_X * 64;
    let mut acc = zeroed_block::<F>();
    let mut k0 = 0u32;
    while k0 < k {
        load_tile_vec4::<F>(a, &mut a_s, t, row0, k0, m, k, 16u32, a_along_k);
        load_tile_vec4::<F>(b, &mut b_s, t, k0, col0, k, n, 64u32, b_along_n);
        sync_cube();
        multiply_tiles::<F>(&a_s, &b_s, &mut acc, tx, ty);
        sync_cube();
        k0 += 16;
    }
    store_block::<F>(c, &acc, row0, col0, m, n, alpha, beta);
}

impl<R: Runtime> Cube<R> {
    /// C = α·op(A)·op(B) + β·C, as [`crate::Backend::gemm`], with the kernel [`Kernels::gemm`]
    /// names (the register-blocked one with vector loads where the shapes allow).
    pub(super) fn launch_gemm(
        &self,
        shape: GemmShape,
        a: &CubeBuffer,
        b: &CubeBuffer,
        c: &mut CubeBuffer,
        alpha: f32,
        beta: f32,
    ) {
        let GemmShape { m, n, k, trans_a, trans_b } = shape;
        if m == 0 || n == 0 {
            return;
        }
        check_len("gemm", "a", a.len, m * k);
        check_len("gemm", "b", b.len, k * n);
        let (a_rs, a_cs) = if trans_a == Transpose::No { (k, 1) } else { (1, m) };
        let (b_rs, b_cs) = if trans_b == Transpose::No { (n, 1) } else { (1, k) };
        // Vector loads where each operand has a contiguous dimension that is a multiple of 4.
        let (a_along_k, b_along_n) = (trans_a == Transpose::No, trans_b == Transpose::No);
        let a_ok = if a_along_k { k.is_multiple_of(4) } else { m.is_multiple_of(4) };
        let b_ok = if b_along_n { n.is_multiple_of(4) } else { k.is_multiple_of(4) };
        if self.kernels.gemm == GemmKernel::RegisterBlocked && k > 0 && a_ok && b_ok {
            // SAFETY: A holds m·k and B k·n values (checked above), positive multiples of 4 (whole
            // vectors); every vector index is bounds-checked against m, n and k in the kernel.
            unsafe {
                gemm_register_blocked_vec4::launch_unchecked::<f32, R>(
                    &self.client,
                    CubeCount::Static(u32_of(n).div_ceil(64), u32_of(m).div_ceil(64), 1),
                    CubeDim::new_2d(16, 16),
                    ArrayArg::from_raw_parts(a.handle.clone(), m * k / 4),
                    ArrayArg::from_raw_parts(b.handle.clone(), k * n / 4),
                    self.arg("gemm", "c", c, m * n),
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
        let (a, b, c) =
            (self.arg("gemm", "a", a, m * k), self.arg("gemm", "b", b, k * n), self.arg("gemm", "c", c, m * n));
        let (m, n, k) = (u32_of(m), u32_of(n), u32_of(k));
        let (a_rs, a_cs, b_rs, b_cs) = (u32_of(a_rs), u32_of(a_cs), u32_of(b_rs), u32_of(b_cs));
        // The strided kernels share their arguments; only the kernel, its grid and the tiled
        // kernel's tile size differ.
        macro_rules! launch_strided {
            ($kernel:ident, $side:expr, $units:expr $(, $tile:expr)?) => {
                $kernel::launch_unchecked::<f32, R>(
                    &self.client,
                    CubeCount::Static(n.div_ceil($side), m.div_ceil($side), 1),
                    CubeDim::new_2d($units, $units),
                    a, b, c, m, n, k, a_rs, a_cs, b_rs, b_cs, alpha, beta $(, $tile)?
                )
            };
        }
        // SAFETY: every index the kernels form is bounds-checked against m, n and k, which the
        // buffers were checked above to cover.
        unsafe {
            match self.kernels.gemm {
                GemmKernel::Naive => launch_strided!(gemm_naive, TILE, TILE),
                GemmKernel::Tiled => launch_strided!(gemm_tiled, TILE, TILE, TILE),
                GemmKernel::RegisterBlocked => launch_strided!(gemm_register_blocked, 64, 16),
            }
        }
    }
}
