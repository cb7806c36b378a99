//! Matrix transposition of 32-bit words, eight by eight in AVX registers: for the GEMMs that read
//! an operand transposed (the `gemm` crate packs such an operand one scalar at a time, and a
//! transposed copy costs a fraction of that) and for ChaCha20's blocks computed lane by lane.

use std::ops::Range;

/// A 32-bit plain value ([`f32`], [`u32`]): any bits are a value, so the AVX kernel may move them
/// as floats.
pub(super) trait Word: Copy {}
impl Word for f32 {}
impl Word for u32 {}

/// `src` (rows × cols, row-major) transposed: cols × rows, row-major.
pub(super) fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut dst = vec![0.0; rows * cols];
    transpose_into(src, rows, cols, &mut dst);
    dst
}

/// `dst[..rows·cols]` (cols × rows) = `src[..rows·cols]` (rows × cols, row-major) transposed.
pub(super) fn transpose_into<T: Word>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    let (src, dst) = (&src[..rows * cols], &mut dst[..rows * cols]);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX (checked just above); both slices hold rows · cols values.
        return unsafe { avx::transpose(src, rows, cols, dst) };
    }
    transpose_part(src, (rows, cols), 0..rows, 0..cols, dst);
}

/// Side of the square blocks [`transpose_part`] copies: two 32 × 32 blocks of f32 (8 KB) stay in
/// L1.
const BLOCK: usize = 32;

/// Rows `rs` × columns `cs` of the transpose of `src` (`shape` = rows × cols, row-major) into
/// `dst`, in cache-sized blocks.
fn transpose_part<T: Word>(src: &[T], shape: (usize, usize), rs: Range<usize>, cs: Range<usize>, dst: &mut [T]) {
    let (rows, cols) = shape;
    for r0 in rs.clone().step_by(BLOCK) {
        for c0 in cs.clone().step_by(BLOCK) {
            for r in r0..(r0 + BLOCK).min(rs.end) {
                let row = &src[r * cols..][..cols];
                for c in c0..(c0 + BLOCK).min(cs.end) {
                    dst[c * rows + r] = row[c];
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    use super::Word;

    /// [`super::transpose_into`] in 8 × 8 blocks held in AVX registers (the unpack / shuffle /
    /// permute sequence of Intel's optimisation manual, §11.11), the ragged edges in scalar code.
    ///
    /// # Safety
    /// The CPU must support AVX, and `src` and `dst` must hold `rows · cols` values each.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn transpose<T: Word>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
        assert!(src.len() >= rows * cols && dst.len() >= rows * cols, "transpose operand too short");
        let (full_rows, full_cols) = (rows / 8 * 8, cols / 8 * 8);
        const { assert!(size_of::<T>() == 4, "a Word is 32 bits") };
        // The words travel as f32 lanes: loads, shuffles and stores keep every bit.
        let (s, d) = (src.as_ptr().cast::<f32>(), dst.as_mut_ptr().cast::<f32>());
        for r0 in (0..full_rows).step_by(8) {
            for c0 in (0..full_cols).step_by(8) {
                // SAFETY: r0 + 8 ≤ rows and c0 + 8 ≤ cols, so every row read (r · cols + c0 ..+8)
                // and every row written (c · rows + r0 ..+8) lies inside the rows · cols values.
                unsafe {
                    let mut v = [_mm256_setzero_ps(); 8];
                    for (i, v) in v.iter_mut().enumerate() {
                        *v = _mm256_loadu_ps(s.add((r0 + i) * cols + c0));
                    }
                    let t0 = _mm256_unpacklo_ps(v[0], v[1]);
                    let t1 = _mm256_unpackhi_ps(v[0], v[1]);
                    let t2 = _mm256_unpacklo_ps(v[2], v[3]);
                    let t3 = _mm256_unpackhi_ps(v[2], v[3]);
                    let t4 = _mm256_unpacklo_ps(v[4], v[5]);
                    let t5 = _mm256_unpackhi_ps(v[4], v[5]);
                    let t6 = _mm256_unpacklo_ps(v[6], v[7]);
                    let t7 = _mm256_unpackhi_ps(v[6], v[7]);
                    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                    let columns = [
                        _mm256_permute2f128_ps::<0x20>(u0, u4),
                        _mm256_permute2f128_ps::<0x20>(u1, u5),
                        _mm256_permute2f128_ps::<0x20>(u2, u6),
                        _mm256_permute2f128_ps::<0x20>(u3, u7),
                        _mm256_permute2f128_ps::<0x31>(u0, u4),
                        _mm256_permute2f128_ps::<0x31>(u1, u5),
                        _mm256_permute2f128_ps::<0x31>(u2, u6),
                        _mm256_permute2f128_ps::<0x31>(u3, u7),
                    ];
                    for (j, column) in columns.into_iter().enumerate() {
                        _mm256_storeu_ps(d.add((c0 + j) * rows + r0), column);
                    }
                }
            }
        }
        // The ragged edges: the last rows whole, then the last columns of the other rows.
        super::transpose_part(src, (rows, cols), full_rows..rows, 0..cols, dst);
        super::transpose_part(src, (rows, cols), 0..full_rows, full_cols..cols, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_every_shape_exactly() {
        for (rows, cols) in [(1, 1), (2, 3), (8, 8), (9, 17), (16, 40), (33, 7), (70, 150), (64, 784)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut want = vec![0.0; rows * cols];
            transpose_part(&src, (rows, cols), 0..rows, 0..cols, &mut want);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(want[c * rows + r], src[r * cols + c]);
                }
            }
            assert_eq!(transpose(&src, rows, cols), want, "{rows} × {cols}");
            // Words that are not ordinary floats (NaN payloads, subnormals) keep their bits.
            let words: Vec<u32> =
                (0..rows * cols).map(|i| 0x7fc0_0001 ^ (i as u32).wrapping_mul(0x9e37_79b9)).collect();
            let mut got = vec![0u32; rows * cols];
            transpose_into(&words, rows, cols, &mut got);
            assert!((0..rows * cols).all(|i| got[i % cols * rows + i / cols] == words[i]), "{rows} × {cols} words");
        }
    }
}
