//! GEMM on the CPU through the `gemm` crate (AVX2/AVX-512/FMA micro-kernels picked at run
//! time), and the linear layer blocked by rows with its bias and activation fused.

use rayon::prelude::*;

use super::elementwise::{apply_bias_activation, bias_activation};
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

/// C = α·op(A)·op(B) + β·C (see [`crate::Backend::gemm`]), threaded over the current rayon pool.
pub(super) fn gemm(shape: GemmShape, a: &[f32], b: &[f32], c: &mut [f32], alpha: f32, beta: f32) {
    let GemmShape { m, n, k, .. } = shape;
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].iter_mut().for_each(|v| *v *= beta);
        return;
    }
    gemm_slices(shape, a, b, c, alpha, beta, gemm::Parallelism::Rayon(rayon::current_num_threads()));
}

/// C = α·op(A)·op(B) + β·C on slices through the `gemm` crate.
fn gemm_slices(
    shape: GemmShape,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    alpha: f32,
    beta: f32,
    parallelism: gemm::Parallelism,
) {
    let GemmShape { m, n, k, trans_a, trans_b } = shape;
    crate::check_len("gemm", "a", a.len(), m * k);
    crate::check_len("gemm", "b", b.len(), k * n);
    crate::check_len("gemm", "c", c.len(), m * n);
    let (a_rs, a_cs) = strides(trans_a, if trans_a == Transpose::No { k } else { m });
    let (b_rs, b_cs) = strides(trans_b, if trans_b == Transpose::No { n } else { k });
    // SAFETY: the assert above bounds every index the strides reach: op(A) is m×k inside `a`,
    // op(B) is k×n inside `b`, C is m×n inside `c`; `c` is uniquely borrowed and does not alias
    // `a` or `b` (distinct Rust borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta != 0.0,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
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
pub(super) fn linear(a: &[f32], w: &[f32], bias: &[f32], out: &mut [f32], shape: LinearShape, act: Activation) {
    let LinearShape { rows, in_dim, out_dim } = shape;
    let product = GemmShape::new(rows, out_dim, in_dim).transposed(Transpose::No, Transpose::Yes);
    if rows <= LINEAR_BLOCK_ROWS {
        gemm(product, a, w, out, 1.0, 0.0);
        bias_activation(out, bias, rows, out_dim, act);
        return;
    }
    crate::check_len("linear", "a", a.len(), rows * in_dim);
    crate::check_len("linear", "w", w.len(), in_dim * out_dim);
    crate::check_len("linear", "bias", bias.len(), out_dim);
    crate::check_len("linear", "out", out.len(), rows * out_dim);
    let (a, w, bias) = (&a[..rows * in_dim], &w[..in_dim * out_dim], &bias[..out_dim]);
    out[..rows * out_dim].par_chunks_mut(LINEAR_BLOCK_ROWS * out_dim).enumerate().for_each(|(blk, o)| {
        let r = o.len() / out_dim;
        let a_blk = &a[blk * LINEAR_BLOCK_ROWS * in_dim..][..r * in_dim];
        let block = GemmShape { m: r, ..product };
        gemm_slices(block, a_blk, w, o, 1.0, 0.0, gemm::Parallelism::None);
        o.chunks_mut(out_dim).for_each(|row| apply_bias_activation(row, bias, act));
    });
}
