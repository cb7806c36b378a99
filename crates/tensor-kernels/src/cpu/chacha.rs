//! The ChaCha20 keystream (Bernstein 2008, "ChaCha, a variant of Salsa20"), sixteen blocks at a
//! time with one block per SIMD lane. The stream is exactly `rand_chacha::ChaCha20Rng`'s: key
//! words from the 32-byte seed (little-endian), a 64-bit block counter in state words 12–13 and the
//! 64-bit stream id in words 14–15; output words are taken block after block. A test checks this
//! bit for bit against rand_chacha. Written lane-parallel so the compiler maps each state word to
//! one AVX-512 (or two AVX2) registers; the GPU kernel runs the same rounds, one block per thread.

/// Blocks computed together, one per lane.
const LANES: usize = 16;
/// Words per ChaCha20 block.
const BLOCK_WORDS: usize = 16;
/// "expand 32-byte k".
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

type Lanes = [u32; LANES];

/// The quarter round on state words a, b, c, d of every lane.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // One index over four rows: the lane loop the compiler vectorises.
fn quarter_round(x: &mut [Lanes; 16], a: usize, b: usize, c: usize, d: usize) {
    for l in 0..LANES {
        x[a][l] = x[a][l].wrapping_add(x[b][l]);
        x[d][l] = (x[d][l] ^ x[a][l]).rotate_left(16);
        x[c][l] = x[c][l].wrapping_add(x[d][l]);
        x[b][l] = (x[b][l] ^ x[c][l]).rotate_left(12);
        x[a][l] = x[a][l].wrapping_add(x[b][l]);
        x[d][l] = (x[d][l] ^ x[a][l]).rotate_left(8);
        x[c][l] = x[c][l].wrapping_add(x[d][l]);
        x[b][l] = (x[b][l] ^ x[c][l]).rotate_left(7);
    }
}

/// Blocks `block .. block + 16` of the stream, block-major into `out`.
#[inline(always)]
fn blocks_portable(key: &[u32; 8], stream: u64, block: u64, out: &mut [u32; LANES * BLOCK_WORDS]) {
    let mut init = [[0u32; LANES]; 16];
    for (row, &s) in init.iter_mut().zip(&SIGMA) {
        *row = [s; LANES];
    }
    for (row, &k) in init[4..12].iter_mut().zip(key) {
        *row = [k; LANES];
    }
    let (low, high) = init.split_at_mut(13);
    for (l, (lo, hi)) in low[12].iter_mut().zip(high[0].iter_mut()).enumerate() {
        let counter = block.wrapping_add(l as u64);
        (*lo, *hi) = (counter as u32, (counter >> 32) as u32);
    }
    init[14] = [stream as u32; LANES];
    init[15] = [(stream >> 32) as u32; LANES];
    let mut x = init;
    for _ in 0..10 {
        quarter_round(&mut x, 0, 4, 8, 12);
        quarter_round(&mut x, 1, 5, 9, 13);
        quarter_round(&mut x, 2, 6, 10, 14);
        quarter_round(&mut x, 3, 7, 11, 15);
        quarter_round(&mut x, 0, 5, 10, 15);
        quarter_round(&mut x, 1, 6, 11, 12);
        quarter_round(&mut x, 2, 7, 8, 13);
        quarter_round(&mut x, 3, 4, 9, 14);
    }
    // Word-major in registers, block-major in the keystream: added as one flat run of words (a
    // copy into `out` word by word became 32 gathers, half of this function's time), then
    // transposed.
    let mut words = [0u32; LANES * BLOCK_WORDS];
    for (w, (a, b)) in words.iter_mut().zip(x.as_flattened().iter().zip(init.as_flattened())) {
        *w = a.wrapping_add(*b);
    }
    super::transpose::transpose_into(&words, BLOCK_WORDS, LANES, out);
}

widest_simd_fn! {
    /// [`blocks_portable`] in the CPU's widest vectors (integer lanes: the same words everywhere).
    fn blocks(key: &[u32; 8], stream: u64, block: u64, out: &mut [u32; LANES * BLOCK_WORDS]) =
        blocks_portable(key, stream, block, out)
}

/// A reader of one ChaCha20 stream from a given word position.
pub(crate) struct Keystream {
    key: [u32; 8],
    stream: u64,
    /// The block that `buffer` starts with.
    block: u64,
    buffer: [u32; LANES * BLOCK_WORDS],
    /// Next unread word of `buffer`.
    next: usize,
}

impl Keystream {
    /// The stream `stream` of `seed`, positioned at word `word` (as `ChaCha20Rng::set_word_pos`).
    pub(crate) fn new(seed: &[u8; 32], stream: u64, word: u64) -> Self {
        let mut key = [0u32; 8];
        for (k, bytes) in key.iter_mut().zip(seed.chunks_exact(4)) {
            *k = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        let block = word / BLOCK_WORDS as u64;
        let mut reader = Keystream { key, stream, block, buffer: [0; LANES * BLOCK_WORDS], next: 0 };
        blocks(&reader.key, stream, block, &mut reader.buffer);
        reader.next = (word % BLOCK_WORDS as u64) as usize;
        reader
    }

    /// Fills `out` with the next words of the stream.
    pub(crate) fn fill(&mut self, out: &mut [u32]) {
        let mut done = 0;
        while done < out.len() {
            if self.next == self.buffer.len() {
                self.block = self.block.wrapping_add(LANES as u64);
                blocks(&self.key, self.stream, self.block, &mut self.buffer);
                self.next = 0;
            }
            let n = (self.buffer.len() - self.next).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.buffer[self.next..self.next + n]);
            self.next += n;
            done += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn keystream_equals_rand_chacha_at_any_position() {
        let seed: [u8; 32] = std::array::from_fn(|i| (i * 37 + 11) as u8);
        for (stream, word) in [(0u64, 0u64), (5, 3), (u64::MAX, 255), (9, 1_000_003), (1, (1 << 36) - 7)] {
            let mut reference = ChaCha20Rng::from_seed(seed);
            reference.set_stream(stream);
            reference.set_word_pos(u128::from(word));
            let mut want = vec![0u32; 1000];
            reference.fill(&mut want[..]);
            let mut ours = Keystream::new(&seed, stream, word);
            let mut got = vec![0u32; 1000];
            // Uneven reads cross buffer boundaries.
            let (a, b) = got.split_at_mut(333);
            ours.fill(a);
            ours.fill(b);
            assert_eq!(got, want, "stream {stream}, word {word}");
        }
    }

    #[test]
    fn rfc_7539_block_function_test_vector() {
        // RFC 7539 §2.3.2 with its 96-bit nonce: counter 1, nonce words 0x09000000, 0x4a000000,
        // 0 — in the 64/64 layout, block 0x0900_0000_0000_0001 of stream 0x4a00_0000.
        let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
        let mut ours = Keystream::new(&seed, 0x4a00_0000, 0x0900_0000_0000_0001 * 16);
        let mut got = [0u32; 4];
        ours.fill(&mut got);
        assert_eq!(got, [0xe4e7_f110, 0x1559_3bd1, 0x1fdd_0f50, 0xc471_20a3]);
    }
}
