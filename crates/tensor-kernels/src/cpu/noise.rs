//! Counter-based Gaussian noise. ChaCha20 words 3g, 3g + 1, 3g + 2 of a stream hold four 24-bit
//! uniforms u₀…u₃; the Box–Muller transform (Box & Muller 1958) of (u₀, u₁) and of (u₂, u₃) gives
//! values 4g … 4g + 3 (cosine, sine, cosine, sine). Any slice of the stream can be produced
//! independently — by any thread or device — and the result never depends on how the work was
//! split. Packing the uniforms into 24 bits spends 3 keystream words on 4 values.
//!
//! The transform runs in f32 with polynomial logarithm, sine and cosine (Cephes `logf`, `sinf`,
//! `cosf` coefficients), branch-free so the loops vectorise. Rust never fuses a·b + c, so every
//! operation rounds once, in this order; the GPU kernel `cube::noise::gaussian_noise` repeats
//! them with rounding barriers that keep its compiler from fusing them either, and gives the
//! same values bit for bit. Uniforms take the top 24 bits of a
//! word: u₁ ∈ (2⁻²⁴, 1], so |z| ≤ √(48 ln 2) ≈ 5.77 (the tail beyond has probability 8·10⁻⁹).

use super::chacha::Keystream;
use crate::NoiseKey;

/// Word groups (3 words, 4 values each) transformed per block of ChaCha20 output.
const GROUPS: usize = 128;

/// The keystream of `key` positioned at word group `group` (word 3·group).
fn positioned(key: NoiseKey, group: u64) -> Keystream {
    Keystream::new(&key.seed, key.stream, 3 * group)
}

/// The four 24-bit uniforms packed in three words.
#[inline(always)]
fn unpack(w: &[u32]) -> [u32; 4] {
    [w[0] >> 8, ((w[0] & 0xff) << 16) | (w[1] >> 16), ((w[1] & 0xffff) << 8) | (w[2] >> 24), w[2] & 0xff_ffff]
}

/// ln x for x ∈ (0, 1] in f32 (Cephes `logf`: x = m·2ᵉ with m ∈ [√½, √2), degree-9 polynomial).
#[inline(always)]
fn ln_f32(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 126;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000); // [0.5, 1)
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    e -= i32::from(small);
    m = if small { m + m - 1.0 } else { m - 1.0 };
    let z = m * m;
    let mut p = 7.037_683_6e-2f32;
    for c in [
        -1.151_461e-1,
        1.167_699_9e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_4e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ] {
        p = p * m + c;
    }
    let ef = e as f32;
    let y = m * z * p - 2.121_944_4e-4 * ef - 0.5 * z;
    m + y + 0.693_359_4 * ef
}

/// (cos, sin) of φ ∈ [−π/4, π/4] (Cephes `cosf` / `sinf` minimax polynomials).
#[inline(always)]
fn cos_sin_small(phi: f32) -> (f32, f32) {
    let x2 = phi * phi;
    let sin = phi + phi * x2 * (-1.666_665_5e-1 + x2 * (8.332_161e-3 + x2 * -1.951_529_6e-4));
    let cos = 1.0 - 0.5 * x2 + x2 * x2 * (4.166_664_6e-2 + x2 * (-1.388_731_6e-3 + x2 * 2.443_315_7e-5));
    (cos, sin)
}

/// The Box–Muller pair (R cos θ, R sin θ) from 24-bit uniforms a (radius, u₁ = (a + 1)/2²⁴) and
/// b (angle θ = 2π·b/2²⁴).
#[inline(always)]
fn box_muller_pair(a: u32, b: u32) -> (f32, f32) {
    const TWO_POW_M24: f32 = 1.0 / 16_777_216.0;
    const TWO_POW_M22: f32 = 1.0 / 4_194_304.0;
    // Through i32: the values fit in 24 bits, and signed conversion vectorises (unsigned does not).
    let u1 = (a + 1) as i32 as f32 * TWO_POW_M24;
    let radius = (-2.0 * ln_f32(u1)).sqrt();
    // θ = (q + ½)·π/2 + φ with quadrant q = top two bits and φ ∈ [−π/4, π/4).
    let q = b >> 22;
    let phi = ((b & 0x3f_ffff) as i32 as f32 * TWO_POW_M22 - 0.5) * std::f32::consts::FRAC_PI_2;
    let (c, s) = cos_sin_small(phi);
    let h = std::f32::consts::FRAC_1_SQRT_2;
    let c0 = if q == 0 || q == 3 { h } else { -h };
    let s0 = if q < 2 { h } else { -h };
    (radius * (c0 * c - s0 * s), radius * (s0 * c + c0 * s))
}

/// Box–Muller over [`GROUPS`] word groups into four separate arrays (value 4g + k goes to
/// `out[k][g]`; no interleaved stores, and fixed 16-group blocks, so the loop vectorises with no
/// scalar remainder; the interleave is a second, cheap pass).
#[inline(always)]
fn transform_portable(words: &[u32; 3 * GROUPS], out: &mut [[f32; GROUPS]; 4]) {
    const BLOCK: usize = 16;
    let [c0, s0, c1, s1] = out;
    for b in 0..GROUPS / BLOCK {
        for l in 0..BLOCK {
            let g = b * BLOCK + l;
            let u = unpack(&words[3 * g..3 * g + 3]);
            (c0[g], s0[g]) = box_muller_pair(u[0], u[1]);
            (c1[g], s1[g]) = box_muller_pair(u[2], u[3]);
        }
    }
}

widest_simd_fn! {
    /// [`transform_portable`] in the CPU's widest vectors (AVX-512: 16 lanes), bit-identical.
    fn transform(words: &[u32; 3 * GROUPS], out: &mut [[f32; GROUPS]; 4]) = transform_portable(words, out)
}

/// The N(0, 1) value at position `key.offset + i` of the stream.
pub fn standard_normal_at(key: NoiseKey, i: u64) -> f32 {
    let v = key.offset + i;
    let mut rng = positioned(key, v / 4);
    let mut w = [0u32; 3];
    rng.fill(&mut w);
    let u = unpack(&w);
    let (c, s) = if v % 4 < 2 { box_muller_pair(u[0], u[1]) } else { box_muller_pair(u[2], u[3]) };
    if v.is_multiple_of(2) {
        c
    } else {
        s
    }
}

/// Writes the stream's values `first .. first + out.len()` (offset included) into `out`,
/// generating ChaCha20 output a block at a time.
pub(crate) fn fill(out: &mut [f32], key: NoiseKey, first: u64) {
    if out.is_empty() {
        return;
    }
    let v0 = key.offset + first;
    let mut rng = positioned(key, v0 / 4);
    let mut words = [0u32; 3 * GROUPS];
    let mut parts = [[0f32; GROUPS]; 4];
    let mut normals = [0f32; 4 * GROUPS];
    // Position within the first group: skip the values before the requested one.
    let mut skip = (v0 % 4) as usize;
    let mut j = 0;
    while j < out.len() {
        let groups = (out.len() - j + skip).div_ceil(4).min(GROUPS);
        // Whole blocks only (a fixed trip count vectorises fully); surplus values are discarded.
        rng.fill(&mut words);
        transform(&words, &mut parts);
        for g in 0..groups {
            for (k, part) in parts.iter().enumerate() {
                normals[4 * g + k] = part[g];
            }
        }
        let available = &normals[skip..4 * groups];
        let n = available.len().min(out.len() - j);
        out[j..j + n].copy_from_slice(&available[..n]);
        j += n;
        skip = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polynomial_ln_sin_cos_are_accurate() {
        let mut worst = 0.0f64;
        for k in 1..=100_000u32 {
            let x = k as f32 / 100_000.0;
            let want = f64::from(x).ln();
            worst = worst.max((f64::from(ln_f32(x)) - want).abs() / want.abs().max(1.0));
        }
        assert!(worst < 2e-7, "ln relative error {worst}");
        for k in 0..=1000 {
            let phi = (k as f32 / 1000.0 - 0.5) * std::f32::consts::FRAC_PI_2;
            let (c, s) = cos_sin_small(phi);
            assert!((f64::from(c) - f64::from(phi).cos()).abs() < 2e-7);
            assert!((f64::from(s) - f64::from(phi).sin()).abs() < 2e-7);
        }
    }

    #[test]
    fn three_words_unpack_into_four_24_bit_uniforms() {
        assert_eq!(unpack(&[0x1234_5678, 0x9abc_def0, 0x1357_9bdf]), [0x12_3456, 0x78_9abc, 0xde_f013, 0x57_9bdf]);
    }

    #[test]
    fn box_muller_angle_covers_all_quadrants() {
        for (b, want) in [(0u32, 0.0f64), (1 << 22, 0.25), (2 << 22, 0.5), (3 << 22, 0.75), (0x60_0000, 0.375)] {
            // The largest uniform gives u₁ = 1 and radius 0; the smallest the largest radius.
            let (c, s) = box_muller_pair(0xff_ffff, b);
            assert_eq!((c.abs(), s.abs()), (0.0, 0.0));
            let (c, s) = box_muller_pair(0, b);
            let r = f64::from(c).hypot(f64::from(s));
            let theta = f64::from(s).atan2(f64::from(c)).rem_euclid(std::f64::consts::TAU);
            let gap = (theta - want * std::f64::consts::TAU).rem_euclid(std::f64::consts::TAU);
            assert!(gap.min(std::f64::consts::TAU - gap) < 1e-5, "b {b:#x}: θ {theta}");
            assert!((r - (2.0 * 24.0 * std::f64::consts::LN_2).sqrt()).abs() < 1e-4);
        }
    }
}
