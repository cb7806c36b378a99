//! The CubeCL kernels, one per backend op; host wrappers live in `super`.

use cubecl::prelude::*;

/// `act(v)` for the activation code of [`super::activation_code`] (0 identity, 1 ReLU, 2 sigmoid).
#[cube]
fn activate<F: Float>(v: F, #[comptime] act: u32) -> F {
    let mut out = v;
    if act == 1 {
        out = v.max(F::new(0.0));
    }
    if act == 2 {
        out = F::new(1.0) / (F::new(1.0) + F::exp(-v));
    }
    out
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

/// A unit's 4 × 4 accumulators of a register-blocked product, zeroed.
#[cube]
fn zeroed_block<F: Float + CubeElement>() -> Array<F> {
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
fn store_block<F: Float + CubeElement>(
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
fn multiply_tiles<F: Float + CubeElement>(
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

/// x[i, j] ← act(x[i, j] + bias[j]) over the first `len` values of a matrix with `cols` columns.
#[cube(launch_unchecked)]
pub(super) fn bias_activation<F: Float + CubeElement>(
    x: &mut Array<F>,
    bias: &Array<F>,
    len: u32,
    cols: u32,
    #[comptime] act: u32,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let v = x[i as usize] + bias[(i % cols) as usize];
        x[i as usize] = activate::<F>(v, act);
    }
}

/// grad ← grad ⊙ act′, with act′ written through the activation's output y.
#[cube(launch_unchecked)]
#[allow(clippy::collapsible_if)] // The outer test is resolved when the kernel is expanded.
pub(super) fn activation_backward<F: Float + CubeElement>(
    grad: &mut Array<F>,
    y: &Array<F>,
    len: u32,
    #[comptime] act: u32,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let yi = y[i as usize];
        if act == 1 {
            if yi <= F::new(0.0) {
                grad[i as usize] = F::new(0.0);
            }
        }
        if act == 2 {
            grad[i as usize] = grad[i as usize] * yi * (F::new(1.0) - yi);
        }
    }
}

/// acc[r] += ‖δ_r‖² (‖a_r‖² + 1): one cube of `block` units per row, both squared norms by one
/// shared-memory tree reduction over pairs. Cubes past the last row (the cube grid is
/// two-dimensional) do nothing.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn add_ghost_norms<F: Float + CubeElement>(
    delta: &Array<F>,
    act: &Array<F>,
    acc: &mut Array<F>,
    rows: u32,
    delta_cols: u32,
    act_cols: u32,
    #[comptime] block: u32,
) {
    let row = CUBE_POS_X + CUBE_POS_Y * CUBE_COUNT_X;
    if row >= rows {
        terminate!();
    }
    let mut d = F::new(0.0);
    let mut j = UNIT_POS_X;
    while j < delta_cols {
        let v = delta[(row * delta_cols + j) as usize];
        d += v * v;
        j += block;
    }
    let mut a = F::new(0.0);
    j = UNIT_POS_X;
    while j < act_cols {
        let v = act[(row * act_cols + j) as usize];
        a += v * v;
        j += block;
    }
    let mut shared = SharedMemory::<F>::new((2 * block) as usize);
    shared[UNIT_POS_X as usize] = d;
    shared[(block + UNIT_POS_X) as usize] = a;
    sync_cube();
    let mut stride = (block / 2).runtime();
    while stride > 0 {
        if UNIT_POS_X < stride {
            let other_d = shared[(UNIT_POS_X + stride) as usize];
            let other_a = shared[(block + UNIT_POS_X + stride) as usize];
            shared[UNIT_POS_X as usize] += other_d;
            shared[(block + UNIT_POS_X) as usize] += other_a;
        }
        sync_cube();
        stride /= 2;
    }
    if UNIT_POS_X == 0 {
        acc[row as usize] += shared[0] * (shared[block as usize] + F::new(1.0));
    }
}

/// out[j] = α·Σᵢ x[i, j] + β·out[j] (β = 0: out not read); one unit per column.
#[cube(launch_unchecked)]
pub(super) fn column_sums<F: Float + CubeElement>(
    x: &Array<F>,
    out: &mut Array<F>,
    rows: u32,
    cols: u32,
    alpha: F,
    beta: F,
) {
    let j = ABSOLUTE_POS as u32;
    if j < cols {
        let mut acc = F::new(0.0);
        for i in 0..rows {
            acc += x[(i * cols + j) as usize];
        }
        if beta == F::new(0.0) {
            out[j as usize] = alpha * acc;
        } else {
            out[j as usize] = alpha * acc + beta * out[j as usize];
        }
    }
}

/// y ← y + α·x over the first `len` values.
#[cube(launch_unchecked)]
pub(super) fn axpy<F: Float + CubeElement>(alpha: F, x: &Array<F>, y: &mut Array<F>, len: u32) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        y[i as usize] += alpha * x[i as usize];
    }
}

/// factors[i] = min(1, C / (√squared[i] + 10⁻⁶)) for i < rows: DP-SGD's per-sample clip factors.
#[cube(launch_unchecked)]
pub(super) fn clip_factors<F: Float + CubeElement>(
    squared: &Array<F>,
    factors: &mut Array<F>,
    rows: u32,
    clip_norm: F,
) {
    let i = ABSOLUTE_POS as u32;
    if i < rows {
        let f = clip_norm / (F::sqrt(squared[i as usize]) + F::new(1e-6));
        factors[i as usize] = F::min(f, F::new(1.0));
    }
}

/// The clipped gradient sum of a linear layer, grad_w = Σᵢ fᵢ δᵢ aᵢᵀ (m × n) and grad_b = Σᵢ fᵢ δᵢ
/// (m), for δ: k × m, a: k × n, f: k, as one register-blocked product (see
/// [`gemm_register_blocked`]) of (diag(f) δ)ᵀ with [a | 1]: the clip factors scale δ as its tile
/// is loaded, and output column n, against the column of ones, is the bias gradient. Both tiles
/// are read along their contiguous dimension (m for δ, n for a). The grid covers n + 1 columns.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn clipped_linear_grads<F: Float + CubeElement>(
    delta: &Array<F>,
    act: &Array<F>,
    factors: &Array<F>,
    grad_w: &mut Array<F>,
    grad_b: &mut Array<F>,
    m: u32,
    n: u32,
    k: u32,
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
        #[unroll]
        for l in 0..4u32 {
            // Tile element (depth d, row or column c): consecutive units read consecutive c.
            let idx = t + 256 * l;
            let (d, c) = (idx / 64, idx % 64);
            let gd = k0 + d;
            let mut va = F::new(0.0);
            let mut vb = F::new(0.0);
            if gd < k {
                if row0 + c < m {
                    va = factors[gd as usize] * delta[(gd * m + row0 + c) as usize];
                }
                let gc = col0 + c;
                if gc < n {
                    vb = act[(gd * n + gc) as usize];
                } else if gc == n {
                    vb = F::new(1.0);
                }
            }
            a_s[(c * 16 + d) as usize] = va;
            b_s[idx as usize] = vb;
        }
        sync_cube();
        multiply_tiles::<F>(&a_s, &b_s, &mut acc, tx, ty);
        sync_cube();
        k0 += 16;
    }
    store_block::<F>(grad_w, &acc, row0, col0, m, n, F::new(1.0), F::new(0.0));
    // Column n (the sum against the ones) is the bias gradient; it lies in one block column.
    if col0 <= n && n < col0 + 64 && (n - col0) % 16 == tx {
        let j = (n - col0) / 16;
        #[unroll]
        for i in 0..4u32 {
            let row = row0 + ty + 16 * i;
            if row < m {
                grad_b[row as usize] = acc[(i * 4 + j) as usize];
            }
        }
    }
}

/// One Adam update per element (Kingma & Ba 2015, PyTorch's form):
/// m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², p ← p − step·m / (√v / √bc₂ + ε).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn adam<F: Float + CubeElement>(
    p: &mut Array<F>,
    g: &Array<F>,
    m: &mut Array<F>,
    v: &mut Array<F>,
    len: u32,
    beta1: F,
    beta2: F,
    eps: F,
    step_size: F,
    bc2_sqrt: F,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let gi = g[i as usize];
        let mi = beta1 * m[i as usize] + (F::new(1.0) - beta1) * gi;
        let vi = beta2 * v[i as usize] + (F::new(1.0) - beta2) * gi * gi;
        m[i as usize] = mi;
        v[i as usize] = vi;
        p[i as usize] = p[i as usize] - step_size * mi / (F::sqrt(vi) / bc2_sqrt + eps);
    }
}

/// x[i] = value for i < len.
#[cube(launch_unchecked)]
pub(super) fn fill<F: Float + CubeElement>(x: &mut Array<F>, len: u32, value: F) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        x[i as usize] = value;
    }
}

/// dst[i] = src[i] for i < len.
#[cube(launch_unchecked)]
pub(super) fn copy<F: Float + CubeElement>(src: &Array<F>, dst: &mut Array<F>, len: u32) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        dst[i as usize] = src[i as usize];
    }
}

/// grad ← grad ⊙ act″ through the output y (the sigmoid's y(1 − y)(1 − 2y); zero for identity
/// and ReLU).
#[cube(launch_unchecked)]
pub(super) fn activation_curvature<F: Float + CubeElement>(
    grad: &mut Array<F>,
    y: &Array<F>,
    len: u32,
    #[comptime] act: u32,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let yi = y[i as usize];
        let mut factor = F::new(0.0);
        if act == 2 {
            factor = yi * (F::new(1.0) - yi) * (F::new(1.0) - F::new(2.0) * yi);
        }
        grad[i as usize] = grad[i as usize] * factor;
    }
}

/// Sums `value` over the cube's `block` units (a shared-memory tree) into partials[cube index];
/// every unit of the cube must call it.
#[cube]
fn cube_sum_into<F: Float + CubeElement>(value: F, partials: &mut Array<F>, #[comptime] block: u32) {
    let mut shared = SharedMemory::<F>::new(block as usize);
    shared[UNIT_POS_X as usize] = value;
    sync_cube();
    let mut stride = (block / 2).runtime();
    while stride > 0 {
        if UNIT_POS_X < stride {
            let other = shared[(UNIT_POS_X + stride) as usize];
            shared[UNIT_POS_X as usize] += other;
        }
        sync_cube();
        stride /= 2;
    }
    if UNIT_POS_X == 0 {
        partials[(CUBE_POS_X + CUBE_POS_Y * CUBE_COUNT_X) as usize] = shared[0];
    }
}

/// d = pred − target: grad = 2·scale·d, and each cube's Σ d² into partials (the host adds the
/// partials in f64).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn squared_error<F: Float + CubeElement>(
    pred: &Array<F>,
    target: &Array<F>,
    grad: &mut Array<F>,
    partials: &mut Array<F>,
    len: u32,
    scale: F,
    #[comptime] block: u32,
) {
    let i = ABSOLUTE_POS as u32;
    let mut square = F::new(0.0);
    if i < len {
        let d = pred[i as usize] - target[i as usize];
        square = d * d;
        grad[i as usize] = F::new(2.0) * scale * d;
    }
    cube_sum_into::<F>(square, partials, block);
}

/// z[r, j] = μ[r, j] + exp(½ log σ²[r, j])·ε[r, j], head rows [μ | log σ²].
#[cube(launch_unchecked)]
pub(super) fn reparameterize<F: Float + CubeElement>(
    head: &Array<F>,
    eps: &Array<F>,
    z: &mut Array<F>,
    len: u32,
    latent: u32,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let (r, j) = (i / latent, i % latent);
        let mu = head[(r * 2 * latent + j) as usize];
        let lv = head[(r * 2 * latent + latent + j) as usize];
        z[i as usize] = mu + F::exp(F::new(0.5) * lv) * eps[i as usize];
    }
}

/// The head gradient of the reparameterisation plus β·KL, and each element's KL term
/// −½(1 + log σ² − μ² − σ²), summed per cube into partials (the host adds them in f64).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn reparameterize_backward<F: Float + CubeElement>(
    head: &Array<F>,
    eps: &Array<F>,
    grad_z: &Array<F>,
    grad_head: &mut Array<F>,
    partials: &mut Array<F>,
    len: u32,
    latent: u32,
    kl_weight: F,
    #[comptime] block: u32,
) {
    let i = ABSOLUTE_POS as u32;
    let mut kl = F::new(0.0);
    if i < len {
        let (r, j) = (i / latent, i % latent);
        let (mu_at, lv_at) = ((r * 2 * latent + j) as usize, (r * 2 * latent + latent + j) as usize);
        let mu = head[mu_at];
        let lv = head[lv_at];
        let var = F::exp(lv);
        let gz = grad_z[i as usize];
        kl = F::new(-0.5) * (F::new(1.0) + lv - mu * mu - var);
        grad_head[mu_at] = gz + kl_weight * mu;
        grad_head[lv_at] = gz * eps[i as usize] * F::new(0.5) * F::exp(F::new(0.5) * lv)
            + kl_weight * F::new(0.5) * (var - F::new(1.0));
    }
    cube_sum_into::<F>(kl, partials, block);
}

/// Max or average pooling of NHWC images: one unit per output value; channels from `offset`
/// of `out_channels` per output pixel. `kind` 0 max, 1 average of in-bounds values.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn pool2d<F: Float + CubeElement>(
    x: &Array<F>,
    out: &mut Array<F>,
    len: u32,
    h: u32,
    w: u32,
    c: u32,
    out_h: u32,
    out_w: u32,
    out_channels: u32,
    offset: u32,
    size: u32,
    stride: u32,
    pad: u32,
    #[comptime] kind: u32,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let ch = i % c;
        let px = i / c;
        let ox = px % out_w;
        let oy = (px / out_w) % out_h;
        let image = px / (out_w * out_h);
        // Window [y0, y1) × [x0, x1) inside the image (unsigned: compare before subtracting).
        let ys = oy * stride;
        let xs = ox * stride;
        let mut y0 = 0u32;
        if ys > pad {
            y0 = ys - pad;
        }
        let mut x0 = 0u32;
        if xs > pad {
            x0 = xs - pad;
        }
        let y1 = min(ys + size - pad, h);
        let x1 = min(xs + size - pad, w);
        let mut acc = F::new(0.0);
        if kind == 0 {
            acc = F::new(-3.0e38);
        }
        for y in y0..y1 {
            for xx in x0..x1 {
                let v = x[(((image * h + y) * w + xx) * c + ch) as usize];
                if kind == 0 {
                    acc = acc.max(v);
                } else {
                    acc += v;
                }
            }
        }
        if kind == 1 {
            acc /= F::cast_from((y1 - y0) * (x1 - x0));
        }
        out[(px * out_channels + offset + ch) as usize] = acc;
    }
}

/// Bilinear resize of NHWC images with half-pixel centres (PyTorch `align_corners=False`):
/// one unit per output value.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn resize_bilinear<F: Float + CubeElement>(
    x: &Array<F>,
    out: &mut Array<F>,
    len: u32,
    h: u32,
    w: u32,
    c: u32,
    out_h: u32,
    out_w: u32,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let ch = i % c;
        let px = i / c;
        let ox = px % out_w;
        let oy = (px / out_w) % out_h;
        let image = px / (out_w * out_h);
        let sy =
            F::max(F::cast_from(h) / F::cast_from(out_h) * (F::cast_from(oy) + F::new(0.5)) - F::new(0.5), F::new(0.0));
        let sx =
            F::max(F::cast_from(w) / F::cast_from(out_w) * (F::cast_from(ox) + F::new(0.5)) - F::new(0.5), F::new(0.0));
        let y0 = min(u32::cast_from(sy), h - 1);
        let x0 = min(u32::cast_from(sx), w - 1);
        let y1 = min(y0 + 1, h - 1);
        let x1 = min(x0 + 1, w - 1);
        let ly1 = sy - F::cast_from(y0);
        let lx1 = sx - F::cast_from(x0);
        let ly0 = F::new(1.0) - ly1;
        let lx0 = F::new(1.0) - lx1;
        let base = image * h;
        let a = x[(((base + y0) * w + x0) * c + ch) as usize];
        let b = x[(((base + y0) * w + x1) * c + ch) as usize];
        let cc = x[(((base + y1) * w + x0) * c + ch) as usize];
        let d = x[(((base + y1) * w + x1) * c + ch) as usize];
        out[i as usize] = ly0 * (lx0 * a + lx1 * b) + ly1 * (lx0 * cc + lx1 * d);
    }
}

/// Direct 2-D convolution of NHWC images with fused bias and activation: one unit per output
/// value (n, y, x, o), weights [kh, kw, in, out], output channels from `offset` of
/// `out_channels` per pixel.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn conv2d_direct<F: Float + CubeElement>(
    x: &Array<F>,
    weight: &Array<F>,
    bias: &Array<F>,
    out: &mut Array<F>,
    len: u32,
    h: u32,
    w: u32,
    c: u32,
    out_h: u32,
    out_w: u32,
    cout: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad_h: u32,
    pad_w: u32,
    out_channels: u32,
    offset: u32,
    #[comptime] act: u32,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let o = i % cout;
        let px = i / cout;
        let ox = px % out_w;
        let oy = (px / out_w) % out_h;
        let image = px / (out_w * out_h);
        let mut acc = bias[o as usize];
        for ky in 0..kh {
            // Input row oy·s + ky − pad_h, skipped when outside (unsigned: compare first).
            let yy = oy * stride + ky;
            if yy >= pad_h && yy - pad_h < h {
                let iy = yy - pad_h;
                for kx in 0..kw {
                    let xx = ox * stride + kx;
                    if xx >= pad_w && xx - pad_w < w {
                        let ix = xx - pad_w;
                        let xbase = ((image * h + iy) * w + ix) * c;
                        let wbase = (ky * kw + kx) * c;
                        for ci in 0..c {
                            acc += x[(xbase + ci) as usize] * weight[((wbase + ci) * cout + o) as usize];
                        }
                    }
                }
            }
        }
        out[(px * out_channels + offset + o) as usize] = activate::<F>(acc, act);
    }
}

/// The convolution of [`conv2d_direct`] as an implicit GEMM: output pixels (n·out_h·out_w rows)
/// × output channels (`cout` columns) over depth kh·kw·c, the im2col matrix never stored: each
/// 64 × 16 tile of it is gathered from the NHWC input straight into shared memory (zeros for
/// padding), and the weights (kh·kw·c × cout, row-major) are the right-hand matrix. Blocking as
/// [`gemm_register_blocked`]; bias and activation are applied as the 4 × 4 results leave the
/// registers, into channels offset… of rows `out_channels` wide.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn conv2d_implicit_gemm<F: Float + CubeElement>(
    x: &Array<F>,
    weight: &Array<F>,
    bias: &Array<F>,
    out: &mut Array<F>,
    pixels: u32,
    h: u32,
    w: u32,
    c: u32,
    out_h: u32,
    out_w: u32,
    cout: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad_h: u32,
    pad_w: u32,
    out_channels: u32,
    offset: u32,
    #[comptime] act: u32,
) {
    let depth = kh * kw * c;
    let mut a_s = SharedMemory::<F>::new(1024usize);
    let mut b_s = SharedMemory::<F>::new(1024usize);
    let tx = UNIT_POS_X;
    let ty = UNIT_POS_Y;
    let t = ty * 16 + tx;
    let row0 = CUBE_POS_Y * 64;
    let col0 = CUBE_POS_X * 64;
    let mut acc = zeroed_block::<F>();
    let mut k0 = 0u32;
    while k0 < depth {
        #[unroll]
        for l in 0..4u32 {
            let idx = t + 256 * l;
            // im2col tile: output pixel idx / 16, depth idx % 16 = (ky·kw + kx)·c + ci.
            let (px, kk) = (row0 + idx / 16, k0 + idx % 16);
            let mut va = F::new(0.0);
            if px < pixels && kk < depth {
                let ci = kk % c;
                let tap = kk / c;
                let (ky, kx) = (tap / kw, tap % kw);
                let ox = px % out_w;
                let oy = (px / out_w) % out_h;
                let image = px / (out_w * out_h);
                let yy = oy * stride + ky;
                let xx = ox * stride + kx;
                // Unsigned: compare before subtracting the padding.
                if yy >= pad_h && yy - pad_h < h && xx >= pad_w && xx - pad_w < w {
                    va = x[(((image * h + yy - pad_h) * w + xx - pad_w) * c + ci) as usize];
                }
            }
            a_s[idx as usize] = va;
            let (kk, o) = (k0 + idx / 64, col0 + idx % 64);
            let mut vb = F::new(0.0);
            if kk < depth && o < cout {
                vb = weight[(kk * cout + o) as usize];
            }
            b_s[idx as usize] = vb;
        }
        sync_cube();
        multiply_tiles::<F>(&a_s, &b_s, &mut acc, tx, ty);
        sync_cube();
        k0 += 16;
    }
    #[unroll]
    for i in 0..4u32 {
        let px = row0 + ty + 16 * i;
        #[unroll]
        for j in 0..4u32 {
            let o = col0 + tx + 16 * j;
            if px < pixels && o < cout {
                let v = acc[(i * 4 + j) as usize] + bias[o as usize];
                out[(px * out_channels + offset + o) as usize] = activate::<F>(v, act);
            }
        }
    }
}

/// out = scale·(g + std·z): the gradient DP-SGD's Adam step uses.
#[cube(launch_unchecked)]
pub(super) fn noisy_gradient<F: Float + CubeElement>(
    g: &Array<F>,
    z: &Array<F>,
    out: &mut Array<F>,
    len: u32,
    scale: F,
    std: F,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        out[i as usize] = scale * (g[i as usize] + std * z[i as usize]);
    }
}

/// v rotated left by `n` bits (`back` = 32 − n).
#[cube]
fn rotate_left(v: u32, #[comptime] n: u32, #[comptime] back: u32) -> u32 {
    (v << n) | (v >> back)
}

/// The ChaCha20 quarter round on state words a, b, c, d (RFC 7539 §2.1).
#[cube]
fn quarter_round(
    x: &mut Array<u32>,
    #[comptime] a: usize,
    #[comptime] b: usize,
    #[comptime] c: usize,
    #[comptime] d: usize,
) {
    x[a] += x[b];
    x[d] = rotate_left(x[d] ^ x[a], 16u32, 16u32);
    x[c] += x[d];
    x[b] = rotate_left(x[b] ^ x[c], 12u32, 20u32);
    x[a] += x[b];
    x[d] = rotate_left(x[d] ^ x[a], 8u32, 24u32);
    x[c] += x[d];
    x[b] = rotate_left(x[b] ^ x[c], 7u32, 25u32);
}

/// v, rounded to f32 where it stands: `zero` is a launch argument that is always 0, so the
/// compiler cannot see through the XOR and cannot contract the product v into a following
/// addition (nvrtc fuses a·b + c by default; the CPU code never does).
#[cube]
fn rounded(v: f32, zero: u32) -> f32 {
    f32::reinterpret(u32::reinterpret(v) ^ zero)
}

/// ln x for x ∈ (0, 1]: `noise::ln_f32` operation for operation (Cephes `logf`).
#[cube]
fn ln_f32(x: f32, zero: u32) -> f32 {
    let bits = u32::reinterpret(x);
    let mut e = i32::cast_from((bits >> 23) & 0xff) - 126;
    let mut m = f32::reinterpret((bits & 0x007f_ffff) | 0x3f00_0000);
    if m < f32::new(std::f32::consts::FRAC_1_SQRT_2) {
        e -= 1;
        m = m + m - f32::new(1.0);
    } else {
        m -= f32::new(1.0);
    }
    let z = m * m;
    let mut p = f32::new(7.037_683_6e-2);
    p = rounded(p * m, zero) + f32::new(-1.151_461e-1);
    p = rounded(p * m, zero) + f32::new(1.167_699_9e-1);
    p = rounded(p * m, zero) + f32::new(-1.242_014_1e-1);
    p = rounded(p * m, zero) + f32::new(1.424_932_3e-1);
    p = rounded(p * m, zero) + f32::new(-1.666_805_8e-1);
    p = rounded(p * m, zero) + f32::new(2.000_071_4e-1);
    p = rounded(p * m, zero) + f32::new(-2.499_999_4e-1);
    p = rounded(p * m, zero) + f32::new(3.333_333e-1);
    let ef = f32::cast_from(e);
    let y = rounded(m * z * p, zero) - rounded(f32::new(2.121_944_4e-4) * ef, zero) - rounded(f32::new(0.5) * z, zero);
    m + y + rounded(f32::new(0.693_359_4) * ef, zero)
}

/// Writes the Box–Muller pair of 24-bit uniforms (a, b), R cos θ and R sin θ, into
/// out[v − skip] and out[v + 1 − skip] where those lie inside `len`: `noise::box_muller_pair`
/// operation for operation.
#[cube]
#[allow(clippy::too_many_arguments)]
fn box_muller_into(out: &mut Array<f32>, a: u32, b: u32, v: u32, skip: u32, len: u32, zero: u32) {
    let u1 = f32::cast_from(a + 1) * f32::new(1.0 / 16_777_216.0);
    let radius = f32::sqrt(f32::new(-2.0) * ln_f32(u1, zero));
    let q = b >> 22;
    let phi = (rounded(f32::cast_from(b & 0x3f_ffff) * f32::new(1.0 / 4_194_304.0), zero) - f32::new(0.5))
        * f32::new(std::f32::consts::FRAC_PI_2);
    let x2 = phi * phi;
    let ps = f32::new(-1.666_665_5e-1)
        + rounded(x2 * (f32::new(8.332_161e-3) + rounded(x2 * f32::new(-1.951_529_6e-4), zero)), zero);
    let sin = phi + rounded(phi * x2 * ps, zero);
    let pc = f32::new(4.166_664_6e-2)
        + rounded(x2 * (f32::new(-1.388_731_6e-3) + rounded(x2 * f32::new(2.443_315_7e-5), zero)), zero);
    let cos = f32::new(1.0) - rounded(f32::new(0.5) * x2, zero) + rounded(x2 * x2 * pc, zero);
    let h = f32::new(std::f32::consts::FRAC_1_SQRT_2);
    let mut c0 = -h;
    if q == 0 || q == 3 {
        c0 = h;
    }
    let mut s0 = -h;
    if q < 2 {
        s0 = h;
    }
    if v >= skip && v - skip < len {
        out[(v - skip) as usize] = radius * (rounded(c0 * cos, zero) - rounded(s0 * sin, zero));
    }
    if v + 1 >= skip && v + 1 - skip < len {
        out[(v + 1 - skip) as usize] = radius * (rounded(s0 * cos, zero) + rounded(c0 * sin, zero));
    }
}

/// N(0, 1) noise, the CPU stream (`noise::fill`) bit for bit: unit u computes ChaCha20 blocks
/// `block + 3u … block + 3u + 2` (48 keystream words = 16 groups of 3) and their 64 Box–Muller
/// values, stream values `64u − skip …` relative to out[0]; values outside [0, len) are dropped.
/// The 64-bit block counter is (block_hi, block_lo); the stream id is (stream_hi, stream_lo);
/// `zero` must be 0 (see [`rounded`]).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn gaussian_noise(
    out: &mut Array<f32>,
    len: u32,
    skip: u32,
    key: &Array<u32>,
    stream_lo: u32,
    stream_hi: u32,
    block_lo: u32,
    block_hi: u32,
    zero: u32,
) {
    let unit = ABSOLUTE_POS as u32;
    if unit * 64 >= skip + len {
        terminate!();
    }
    let mut words = Array::<u32>::new(48usize);
    let mut x = Array::<u32>::new(16usize);
    let mut init = Array::<u32>::new(16usize);
    #[unroll]
    for blk in 0..3u32 {
        let lo = block_lo + unit * 3 + blk;
        let mut hi = block_hi;
        if lo < block_lo {
            hi += 1;
        }
        init[0] = 0x6170_7865;
        init[1] = 0x3320_646e;
        init[2] = 0x7962_2d32;
        init[3] = 0x6b20_6574;
        #[unroll]
        for k in 0..8usize {
            init[4 + k] = key[k];
        }
        init[12] = lo;
        init[13] = hi;
        init[14] = stream_lo;
        init[15] = stream_hi;
        #[unroll]
        for w in 0..16usize {
            x[w] = init[w];
        }
        for _ in 0..10u32 {
            quarter_round(&mut x, 0usize, 4usize, 8usize, 12usize);
            quarter_round(&mut x, 1usize, 5usize, 9usize, 13usize);
            quarter_round(&mut x, 2usize, 6usize, 10usize, 14usize);
            quarter_round(&mut x, 3usize, 7usize, 11usize, 15usize);
            quarter_round(&mut x, 0usize, 5usize, 10usize, 15usize);
            quarter_round(&mut x, 1usize, 6usize, 11usize, 12usize);
            quarter_round(&mut x, 2usize, 7usize, 8usize, 13usize);
            quarter_round(&mut x, 3usize, 4usize, 9usize, 14usize);
        }
        #[unroll]
        for w in 0..16usize {
            words[(blk * 16) as usize + w] = x[w] + init[w];
        }
    }
    for g in 0..16u32 {
        let w0 = words[(3 * g) as usize];
        let w1 = words[(3 * g + 1) as usize];
        let w2 = words[(3 * g + 2) as usize];
        let v = unit * 64 + 4 * g;
        box_muller_into(out, w0 >> 8, ((w0 & 0xff) << 16) | (w1 >> 16), v, skip, len, zero);
        box_muller_into(out, ((w1 & 0xffff) << 8) | (w2 >> 24), w2 & 0xff_ffff, v + 2, skip, len, zero);
    }
}
