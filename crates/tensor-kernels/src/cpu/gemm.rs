//! GEMM on the CPU through the `gemm` crate (AVX2/AVX-512/FMA micro-kernels picked at run
//! time), and the linear layer blocked by rows with its bias and activation fused.

use rayon::prelude::*;

use super::elementwise::{bias_activation, bias_activation_rows};
use super::transpose::{transpose, transpose_into};
use crate::{Activation, GemmShape, LinearShape, Transpose};

/// Rows per block of the blocked [`linear`]: a 256 × 784 output block (800 KB) stays in L2, and
/// the weights are packed only rows/256 times (measured best of 64, 256, 1024 for decoding).
const LINEAR_BLOCK_ROWS: usize = 256;

/// (row stride, column stride) of a row-major operand with `cols` stored columns, transposed or not.
fn strides(trans: Transpose, stored_cols: usize) -> (isize, isize) {
    match trans {
        Transpose::No => (stored_cols as isize, 1),
        Transpose::Yes => (1, stored_cols as isize),
    }
}

/// Columns of C per task of a threaded GEMM. Measured on the VAE's shapes (batch 128 against
/// 128–784 features, 2 cores of an AVX-512 EPYC): 64-column single-threaded calls of the `gemm`
/// crate reach 300–370 GFLOP/s together, its own rayon split 80–200.
const COLUMN_BLOCK: usize = 64;
/// Rows of C per task where C has too few columns to split.
const ROW_BLOCK: usize = 64;
/// Below this many multiply-adds a GEMM runs on the calling thread: a hand-off costs more.
const THREADED_MIN_MACS: usize = 1 << 20;

/// A block of C: rows `row..row + rows`, columns `col..col + cols`.
#[derive(Clone, Copy, Debug)]
struct Tile {
    row: usize,
    rows: usize,
    col: usize,
    cols: usize,
}

/// (rows, columns) of C's tiles: fixed by the shape alone, so each element of C comes from the
/// same `gemm` call (the same blocking of k) whatever the thread count.
fn tile_size(m: usize, n: usize, k: usize) -> (usize, usize) {
    if m * n * k < THREADED_MIN_MACS {
        (m, n)
    } else if n >= 2 * COLUMN_BLOCK {
        (m, COLUMN_BLOCK)
    } else if m >= 2 * ROW_BLOCK {
        (ROW_BLOCK, n)
    } else {
        (m, n)
    }
}

/// C's base pointer, shared by the tasks of a tiled GEMM, each writing its own tile.
#[derive(Clone, Copy)]
struct SharedC(*mut f32);
// SAFETY: the tasks sharing it write disjoint tiles of C (see `gemm`).
unsafe impl Send for SharedC {}
unsafe impl Sync for SharedC {}

/// Fewest rows of C for which a tile copies its part of a transposed B (see [`gemm_tile`]). From 8
/// rows up the copy made every shape of the VAE's layers faster (2 threads, AVX-512 EPYC: 512 →
/// 784 at 8 rows 472 → 98 µs); a single row is a dot product per column, which the crate runs
/// without packing, and at 2 to 4 rows the crate's timings and the copy's cross.
const COPY_B_MIN_ROWS: usize = 8;
/// Largest tile of C (in values) that stays with the crate however many rows it has: from a
/// transposed B the crate computes a tile of at most 16 × 16 values as dot products (gemm-common's
/// horizontal micro-kernel), which round otherwise than the copy's path would.
const CRATE_DOT_PRODUCT_MAX: usize = 16 * 16;
/// Largest copy of B a thread keeps between calls (4 M values, 16 MB); a larger one is freed.
const COPY_B_KEPT: usize = 1 << 22;

thread_local! {
    /// Each thread's copy of its tile of a transposed B, reused from call to call: a fresh
    /// allocation of this size costs a page fault per 4 KB.
    static B_COPY: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// C = α·op(A)·op(B) + β·C (see [`crate::Backend::gemm`]) in tiles of C spread over the current
/// rayon pool, each a single-threaded call of the `gemm` crate.
pub(super) fn gemm(shape: GemmShape, a: &[f32], b: &[f32], c: &mut [f32], alpha: f32, beta: f32) {
    let GemmShape { m, n, k, .. } = shape;
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].iter_mut().for_each(|v| *v *= beta);
        return;
    }
    check_operands(shape, a, b, c);
    let (tile_rows, tile_cols) = tile_size(m, n, k);
    let (down, across) = (m.div_ceil(tile_rows), n.div_ceil(tile_cols));
    let tile = |t: usize| {
        let (row, col) = (t / across * tile_rows, t % across * tile_cols);
        Tile { row, rows: tile_rows.min(m - row), col, cols: tile_cols.min(n - col) }
    };
    let out = SharedC(c.as_mut_ptr());
    // SAFETY: `check_operands` bounded op(A), op(B) and C; the tiles partition C, so each task
    // writes elements no other task touches while `c` stays mutably borrowed by this call.
    let run = |t: usize| unsafe { gemm_tile(shape, a, b, out, tile(t), alpha, beta) };
    if down * across == 1 {
        run(0);
    } else {
        (0..down * across).into_par_iter().for_each(run);
    }
}

/// C = α·op(A)·op(B) + β·C on the calling thread.
fn gemm_single(shape: GemmShape, a: &[f32], b: &[f32], c: &mut [f32], alpha: f32, beta: f32) {
    let GemmShape { m, n, k, .. } = shape;
    if m == 0 || n == 0 || k == 0 {
        return gemm(shape, a, b, c, alpha, beta);
    }
    check_operands(shape, a, b, c);
    // SAFETY: bounded by `check_operands`; `c` is uniquely borrowed.
    unsafe { gemm_tile(shape, a, b, SharedC(c.as_mut_ptr()), Tile { row: 0, rows: m, col: 0, cols: n }, alpha, beta) }
}

/// Refuses operands shorter than the shape needs: op(A) m × k, op(B) k × n, C m × n.
fn check_operands(shape: GemmShape, a: &[f32], b: &[f32], c: &[f32]) {
    let GemmShape { m, n, k, .. } = shape;
    crate::check_len("gemm", "a", a.len(), m * k);
    crate::check_len("gemm", "b", b.len(), k * n);
    crate::check_len("gemm", "c", c.len(), m * n);
}

/// One tile of C = α·op(A)·op(B) + β·C through the `gemm` crate, single-threaded.
///
/// A transposed B (n × k stored, as a linear layer's weight in its forward pass) is first copied
/// as k × cols for the tile's columns, eight by eight in AVX registers: the crate would gather it
/// one scalar at a time (11 % of a DP-SGD step, `perf`, AVX-512 EPYC), and a row-major B it reads
/// in place. Tiles the crate would compute as dot products stay with it ([`CRATE_DOT_PRODUCT_MAX`]),
/// so the products are the same bits as the crate's own (tested).
///
/// # Safety
/// `a`, `b` and the buffer behind `c` must hold op(A), op(B) and C of `shape` in full (row-major,
/// as [`check_operands`] checks), `c` must alias neither input, and no other thread may touch the
/// tile's elements of C during the call.
unsafe fn gemm_tile(shape: GemmShape, a: &[f32], b: &[f32], c: SharedC, tile: Tile, alpha: f32, beta: f32) {
    let GemmShape { n, k, trans_b, .. } = shape;
    let Tile { col, cols, .. } = tile;
    if trans_b == Transpose::No || tile.rows < COPY_B_MIN_ROWS || tile.rows * cols <= CRATE_DOT_PRODUCT_MAX {
        // SAFETY: the caller's contract, with C's row stride n.
        return unsafe { gemm_tile_strided(shape, n, a, b, c, tile, alpha, beta) };
    }
    B_COPY.with_borrow_mut(|copy| {
        copy.resize(k * cols, 0.0);
        transpose_into(&b[col * k..(col + cols) * k], cols, k, copy);
        let columns = GemmShape { n: cols, trans_b: Transpose::No, ..shape };
        // SAFETY: the caller's contract bounds op(A) and the tile of C, whose columns start at
        // `col` of rows n apart; `copy` holds the tile's k × cols of op(B).
        unsafe { gemm_tile_strided(columns, n, a, copy, SharedC(c.0.add(col)), Tile { col: 0, ..tile }, alpha, beta) };
        if copy.capacity() > COPY_B_KEPT {
            *copy = Vec::new();
        }
    })
}

/// [`gemm_tile`] without the copy of B, C's rows `c_stride` (≥ the shape's n) apart.
///
/// # Safety
/// As [`gemm_tile`], with C's tile at rows `c_stride` apart.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_tile_strided(
    shape: GemmShape,
    c_stride: usize,
    a: &[f32],
    b: &[f32],
    c: SharedC,
    tile: Tile,
    alpha: f32,
    beta: f32,
) {
    let GemmShape { m, n, k, trans_a, trans_b } = shape;
    let (a_rs, a_cs) = strides(trans_a, if trans_a == Transpose::No { k } else { m });
    let (b_rs, b_cs) = strides(trans_b, if trans_b == Transpose::No { n } else { k });
    let Tile { row, rows, col, cols } = tile;
    // SAFETY: the caller's contract bounds the tile and its operands (see above).
    unsafe {
        gemm::gemm(
            rows,
            cols,
            k,
            c.0.add(row * c_stride + col),
            1,
            c_stride as isize,
            beta != 0.0,
            a.as_ptr().offset(row as isize * a_rs),
            a_cs,
            a_rs,
            b.as_ptr().offset(col as isize * b_cs),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// dst = a · b with a m × k (row stride `a_stride`), b k × n row-major and dst m × n (row stride
/// `dst_stride`); dst is not read.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_stride: usize,
    b: &[f32],
    dst: &mut [f32],
    dst_stride: usize,
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(a_stride >= k && dst_stride >= n, "gemm strides shorter than rows");
    assert!(
        a.len() >= (m - 1) * a_stride + k && b.len() >= k * n && dst.len() >= (m - 1) * dst_stride + n,
        "gemm operand too short"
    );
    // SAFETY: the asserts bound every index the strides reach inside `a`, `b` and `dst`; `dst` is
    // uniquely borrowed, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            false,
            a.as_ptr(),
            1,
            a_stride as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// out = act(a · wᵀ + bias) (see [`crate::Backend::linear`]): up to [`LINEAR_BLOCK_ROWS`] rows as
/// one threaded GEMM then the bias and activation; more rows in parallel row blocks, each a
/// single-threaded GEMM followed by the bias and activation while the block is still in cache.
/// Each block's arithmetic is the same whatever the thread count.
///
/// The blocks read wᵀ from one copy transposed per call, not one per block (see [`gemm_tile`]).
pub(super) fn linear(a: &[f32], w: &[f32], bias: &[f32], out: &mut [f32], shape: LinearShape, act: Activation) {
    let LinearShape { rows, in_dim, out_dim } = shape;
    let product = GemmShape::new(rows, out_dim, in_dim);
    if rows <= LINEAR_BLOCK_ROWS {
        gemm(product.transposed(Transpose::No, Transpose::Yes), a, w, out, 1.0, 0.0);
        bias_activation(out, bias, rows, out_dim, act);
        return;
    }
    crate::check_len("linear", "a", a.len(), rows * in_dim);
    crate::check_len("linear", "w", w.len(), in_dim * out_dim);
    crate::check_len("linear", "bias", bias.len(), out_dim);
    crate::check_len("linear", "out", out.len(), rows * out_dim);
    let (a, bias) = (&a[..rows * in_dim], &bias[..out_dim]);
    let w_t = transpose(&w[..in_dim * out_dim], out_dim, in_dim);
    out[..rows * out_dim].par_chunks_mut(LINEAR_BLOCK_ROWS * out_dim).enumerate().for_each(|(blk, o)| {
        let r = o.len() / out_dim;
        let a_blk = &a[blk * LINEAR_BLOCK_ROWS * in_dim..][..r * in_dim];
        gemm_single(GemmShape { m: r, ..product }, a_blk, &w_t, o, 1.0, 0.0);
        bias_activation_rows(o, bias, act);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random;

    #[test]
    fn transposing_w_first_changes_no_bit_of_the_blocked_linear() {
        let (rows, in_dim, out_dim) = (2 * LINEAR_BLOCK_ROWS + 37, 70, 150);
        let (a, w, bias) = (random(rows * in_dim, 1), random(out_dim * in_dim, 2), random(out_dim, 3));
        let mut got = vec![f32::NAN; rows * out_dim];
        linear(&a, &w, &bias, &mut got, LinearShape { rows, in_dim, out_dim }, Activation::Relu);
        // Each block as before the copy: the crate reads w through a transposed view.
        let view = GemmShape::new(LINEAR_BLOCK_ROWS, out_dim, in_dim).transposed(Transpose::No, Transpose::Yes);
        let mut want = vec![0.0; rows * out_dim];
        for (blk, o) in want.chunks_mut(LINEAR_BLOCK_ROWS * out_dim).enumerate() {
            let r = o.len() / out_dim;
            gemm_single(
                GemmShape { m: r, ..view },
                &a[blk * LINEAR_BLOCK_ROWS * in_dim..][..r * in_dim],
                &w,
                o,
                1.0,
                0.0,
            );
            bias_activation_rows(o, &bias, Activation::Relu);
        }
        assert_eq!(got, want);
    }

    #[test]
    fn copying_a_transposed_b_changes_no_bit_of_the_product() {
        // Tiled by columns, by rows, and one tile (ragged 8 × 8 edges; the fewest rows that copy; a
        // tile the crate computes as dot products).
        for (m, n, k) in [(128, 784, 512), (300, 100, 77), (20, 33, 130), (8, 512, 784), (12, 40, 300), (16, 4, 128)] {
            let (a, b, c0) = (random(m * k, 4), random(n * k, 5), random(m * n, 6));
            let shape = GemmShape::new(m, n, k).transposed(Transpose::No, Transpose::Yes);
            let mut got = c0.clone();
            gemm(shape, &a, &b, &mut got, 0.5, 2.0);
            // The crate reading B through a transposed view, tile by tile as `gemm` splits C.
            let mut want = c0;
            let (tile_rows, tile_cols) = tile_size(m, n, k);
            for row in (0..m).step_by(tile_rows) {
                for col in (0..n).step_by(tile_cols) {
                    let tile = Tile { row, rows: tile_rows.min(m - row), col, cols: tile_cols.min(n - col) };
                    // SAFETY: the operands hold the whole shape and `want` is borrowed uniquely.
                    unsafe { gemm_tile_strided(shape, n, &a, &b, SharedC(want.as_mut_ptr()), tile, 0.5, 2.0) };
                }
            }
            assert_eq!(got, want, "{m} × {n} × {k}");
        }
    }
}
