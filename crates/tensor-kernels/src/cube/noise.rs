//! The counter-based Gaussian noise stream on the device: ChaCha20 blocks and the Box–Muller
//! transform of `crate::cpu::noise`, bit for bit, with rounding barriers that stop the GPU
//! compiler from fusing a product into an addition.

use cubecl::prelude::*;

use super::{grid, u32_of, Cube, CubeBuffer};
use crate::NoiseKey;

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

impl<R: Runtime> Cube<R> {
    /// Writes N(0, 1) values `key.offset … key.offset + len` of the noise stream into `out`,
    /// generated on the device by [`gaussian_noise`].
    pub(super) fn launch_gaussian_noise(&self, out: &mut CubeBuffer, len: usize, key: NoiseKey) {
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
        // SAFETY: unit u writes out[64u + j − skip] only where that index is below `len`, which
        // `out` was checked to hold; the key buffer holds 8 words.
        unsafe {
            gaussian_noise::launch_unchecked::<R>(
                &self.client,
                grid(units.div_ceil(UNITS as usize)),
                CubeDim::new_1d(UNITS),
                self.arg("fill_standard_normal", "out", out, len),
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
}
