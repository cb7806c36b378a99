//! Counter-based Gaussian noise: value `i` of stream (seed, stream) is a Box–Muller transform of
//! the ChaCha20 words 2i and 2i + 1, so any slice of the stream can be produced independently
//! (by any thread or device) and the result never depends on how the work was split.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::NoiseKey;

/// A ChaCha20 generator positioned at normal value `index` of `key`'s stream.
fn positioned(key: NoiseKey, index: u64) -> ChaCha20Rng {
    let mut rng = ChaCha20Rng::seed_from_u64(key.seed);
    rng.set_stream(key.stream);
    rng.set_word_pos(2 * u128::from(index));
    rng
}

/// Box–Muller (cosine branch) from two uniform words; u₁ ∈ (0, 1] so the logarithm is finite.
#[inline]
fn box_muller(a: u32, b: u32) -> f32 {
    let u1 = (f64::from(a) + 1.0) / 4_294_967_296.0;
    let u2 = f64::from(b) / 4_294_967_296.0;
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// The N(0, 1) value at position `key.offset + i` of the stream.
pub fn standard_normal_at(key: NoiseKey, i: u64) -> f32 {
    let mut rng = positioned(key, key.offset + i);
    let a = rng.next_u32();
    box_muller(a, rng.next_u32())
}

/// Fills `out` with values `first .. first + out.len()` of `key`'s stream (offset included).
pub(crate) fn fill(out: &mut [f32], key: NoiseKey, first: u64) {
    let mut rng = positioned(key, key.offset + first);
    for o in out {
        let a = rng.next_u32();
        *o = box_muller(a, rng.next_u32());
    }
}
