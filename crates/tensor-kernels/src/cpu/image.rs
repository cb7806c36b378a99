//! CPU image ops on NHWC batches: convolution as im2col tiles onto the `gemm` crate with the bias
//! and activation applied while a tile is in cache, pooling, and bilinear resize. Batches run one
//! image per thread (single-threaded GEMMs, no synchronisation inside an image); a batch smaller
//! than the thread pool runs image by image with threaded GEMMs instead.

use rayon::prelude::*;

use super::elementwise::apply_bias_activation;
use super::gemm::gemm_strided;
use super::Cpu;
use crate::{Activation, ChannelSlot, Conv2d, ConvLayer, ImageOps, ImageShape, Pool2d, PoolKind};

impl ImageOps for Cpu {
    fn conv2d(
        &self,
        x: &Vec<f32>,
        shape: ImageShape,
        conv: Conv2d,
        layer: ConvLayer<'_, Vec<f32>>,
        out: &mut Vec<f32>,
        slot: ChannelSlot,
    ) {
        conv2d(x, shape, conv, layer.weight, layer.bias, layer.act, out, slot);
    }

    fn pool2d(&self, x: &Vec<f32>, shape: ImageShape, pool: Pool2d, out: &mut Vec<f32>, slot: ChannelSlot) {
        pool2d(x, shape, pool, out, slot);
    }

    fn resize_bilinear(&self, x: &Vec<f32>, shape: ImageShape, out_h: usize, out_w: usize, out: &mut Vec<f32>) {
        resize_bilinear(x, shape, out_h, out_w, out);
    }
}

/// Patch-matrix rows per tile: about 256 KiB of patches, so the GEMM packs them from cache.
fn tile_rows(k: usize) -> usize {
    ((1 << 16) / k.max(1)).clamp(16, 1024)
}

/// Calls `f(image, its output, GEMM parallelism)` for each of `n` images, whose outputs are
/// consecutive `out_image`-long pieces of `out`.
fn for_each_image(
    n: usize,
    out: &mut [f32],
    out_image: usize,
    f: impl Fn(usize, &mut [f32], gemm::Parallelism) + Sync,
) {
    if n == 0 || out_image == 0 {
        return;
    }
    let out = &mut out[..n * out_image];
    let threads = rayon::current_num_threads();
    if threads > 1 && n >= threads {
        out.par_chunks_mut(out_image).enumerate().for_each(|(i, o)| f(i, o, gemm::Parallelism::None));
    } else {
        let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        out.chunks_mut(out_image).enumerate().for_each(|(i, o)| f(i, o, parallelism));
    }
}

/// Writes the patch rows of output pixels `first .. first + rows` (row length kh·kw·c, order
/// (ky, kx, channel)) of one NHWC image; out-of-bounds taps are zero.
fn im2col(x: &[f32], s: ImageShape, conv: Conv2d, out_w: usize, first: usize, patches: &mut [f32]) {
    let c = s.c;
    let k = conv.kh * conv.kw * c;
    for (r, row) in patches.chunks_mut(k).enumerate() {
        let (oy, ox) = ((first + r) / out_w, (first + r) % out_w);
        // Columns of the window inside the image: kx ∈ [kx0, kx1).
        let ix0 = (ox * conv.stride) as isize - conv.pad_w as isize;
        let kx0 = (-ix0).clamp(0, conv.kw as isize) as usize;
        let kx1 = (s.w as isize - ix0).clamp(kx0 as isize, conv.kw as isize) as usize;
        for ky in 0..conv.kh {
            let dst = &mut row[ky * conv.kw * c..(ky + 1) * conv.kw * c];
            let iy = (oy * conv.stride + ky) as isize - conv.pad_h as isize;
            if iy < 0 || iy >= s.h as isize || kx0 == kx1 {
                dst.fill(0.0);
                continue;
            }
            dst[..kx0 * c].fill(0.0);
            let start = (iy as usize * s.w + (ix0 + kx0 as isize) as usize) * c;
            dst[kx0 * c..kx1 * c].copy_from_slice(&x[start..start + (kx1 - kx0) * c]);
            dst[kx1 * c..].fill(0.0);
        }
    }
}

/// See [`crate::ImageOps::conv2d`].
#[allow(clippy::too_many_arguments)]
fn conv2d(
    x: &[f32],
    s: ImageShape,
    conv: Conv2d,
    weight: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
    slot: ChannelSlot,
) {
    let (out_h, out_w) = conv.output_hw(s.h, s.w);
    let cout = conv.out_channels;
    let k = conv.kh * conv.kw * s.c;
    assert!(
        slot.offset + cout <= slot.channels,
        "conv2d: channels {}..{} exceed the slot's {}",
        slot.offset,
        slot.offset + cout,
        slot.channels
    );
    assert!(x.len() >= s.len() && weight.len() >= k * cout && bias.len() >= cout, "conv2d: operand too short");
    let pixels = out_h * out_w;
    let pointwise = conv.kh == 1 && conv.kw == 1 && conv.stride == 1 && conv.pad_h == 0 && conv.pad_w == 0;
    let tile = tile_rows(k);
    for_each_image(s.n, out, pixels * slot.channels, |image, out, parallelism| {
        let x = &x[image * s.image_len()..(image + 1) * s.image_len()];
        let mut patches = if pointwise { Vec::new() } else { vec![0.0; tile.min(pixels) * k] };
        for first in (0..pixels).step_by(tile) {
            let rows = tile.min(pixels - first);
            let dst = &mut out[first * slot.channels + slot.offset..];
            if pointwise {
                gemm_strided(rows, cout, k, &x[first * s.c..], s.c, weight, dst, slot.channels, parallelism);
            } else {
                let patches = &mut patches[..rows * k];
                im2col(x, s, conv, out_w, first, patches);
                gemm_strided(rows, cout, k, patches, k, weight, dst, slot.channels, parallelism);
            }
            for r in 0..rows {
                apply_bias_activation(&mut dst[r * slot.channels..r * slot.channels + cout], bias, act);
            }
        }
    });
}

/// See [`crate::ImageOps::pool2d`].
fn pool2d(x: &[f32], s: ImageShape, pool: Pool2d, out: &mut [f32], slot: ChannelSlot) {
    let (out_h, out_w) = pool.output_hw(s.h, s.w);
    let c = s.c;
    assert!(
        slot.offset + c <= slot.channels,
        "pool2d: channels {}..{} exceed the slot's {}",
        slot.offset,
        slot.offset + c,
        slot.channels
    );
    assert!(x.len() >= s.len(), "pool2d: input too short");
    let row_len = out_w * slot.channels;
    if s.n * out_h == 0 || row_len == 0 {
        return;
    }
    // Window positions inside [0, size): [start, end) for output index o.
    let range = |o: usize, size: usize| {
        let start = (o * pool.stride) as isize - pool.pad as isize;
        (start.max(0) as usize, ((start + pool.size as isize).min(size as isize)).max(0) as usize)
    };
    out[..s.n * out_h * row_len].par_chunks_mut(row_len).enumerate().for_each(|(r, out_row)| {
        let (image, oy) = (r / out_h, r % out_h);
        let x = &x[image * s.image_len()..(image + 1) * s.image_len()];
        let (y0, y1) = range(oy, s.h);
        for ox in 0..out_w {
            let (x0, x1) = range(ox, s.w);
            let dst = &mut out_row[ox * slot.channels + slot.offset..][..c];
            let pixels = (y0..y1).flat_map(|iy| (x0..x1).map(move |ix| &x[(iy * s.w + ix) * c..][..c]));
            match pool.kind {
                PoolKind::Max => {
                    dst.fill(f32::NEG_INFINITY);
                    for p in pixels {
                        dst.iter_mut().zip(p).for_each(|(d, &v)| *d = d.max(v));
                    }
                }
                PoolKind::Average => {
                    dst.fill(0.0);
                    for p in pixels {
                        dst.iter_mut().zip(p).for_each(|(d, &v)| *d += v);
                    }
                    let inv = 1.0 / ((y1 - y0) * (x1 - x0)).max(1) as f32;
                    dst.iter_mut().for_each(|d| *d *= inv);
                }
            }
        }
    });
}

/// Source taps (i0, i1, λ0, λ1) of each output index, as PyTorch's `upsample_bilinear2d`
/// computes them: src = max(0, (in/out)·(dst + ½) − ½), i0 = ⌊src⌋, i1 = min(i0 + 1, in − 1).
fn bilinear_taps(in_size: usize, out_size: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|o| {
            let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src as usize).min(in_size - 1);
            let i1 = (i0 + 1).min(in_size - 1);
            let l1 = src - i0 as f32;
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// See [`crate::ImageOps::resize_bilinear`].
fn resize_bilinear(x: &[f32], s: ImageShape, out_h: usize, out_w: usize, out: &mut [f32]) {
    let c = s.c;
    let row_len = out_w * c;
    if s.n * out_h == 0 || row_len == 0 {
        return;
    }
    assert!(s.h > 0 && s.w > 0, "resize_bilinear: empty input image");
    assert!(x.len() >= s.len() && out.len() >= s.n * out_h * row_len, "resize_bilinear: operand too short");
    let (rows, cols) = (bilinear_taps(s.h, out_h), bilinear_taps(s.w, out_w));
    out[..s.n * out_h * row_len].par_chunks_mut(row_len).enumerate().for_each(|(r, out_row)| {
        let (image, oy) = (r / out_h, r % out_h);
        let x = &x[image * s.image_len()..(image + 1) * s.image_len()];
        let (y0, y1, ly0, ly1) = rows[oy];
        for (ox, &(x0, x1, lx0, lx1)) in cols.iter().enumerate() {
            let at = |y: usize, xx: usize| &x[(y * s.w + xx) * c..][..c];
            let (a, b, cc, d) = (at(y0, x0), at(y0, x1), at(y1, x0), at(y1, x1));
            for (ch, dst) in out_row[ox * c..(ox + 1) * c].iter_mut().enumerate() {
                *dst = ly0 * (lx0 * a[ch] + lx1 * b[ch]) + ly1 * (lx0 * cc[ch] + lx1 * d[ch]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random;

    /// Direct convolution in f64, one output value at a time.
    fn conv_reference(x: &[f32], s: ImageShape, conv: Conv2d, weight: &[f32], bias: &[f32]) -> Vec<f64> {
        let (oh, ow) = conv.output_hw(s.h, s.w);
        let co = conv.out_channels;
        let mut out = vec![0.0; s.n * oh * ow * co];
        for n in 0..s.n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for o in 0..co {
                        let mut acc = f64::from(bias[o]);
                        for ky in 0..conv.kh {
                            for kx in 0..conv.kw {
                                let iy = (oy * conv.stride + ky) as isize - conv.pad_h as isize;
                                let ix = (ox * conv.stride + kx) as isize - conv.pad_w as isize;
                                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                    continue;
                                }
                                for i in 0..s.c {
                                    let xv = x[((n * s.h + iy as usize) * s.w + ix as usize) * s.c + i];
                                    let wv = weight[((ky * conv.kw + kx) * s.c + i) * co + o];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        out[((n * oh + oy) * ow + ox) * co + o] = acc.max(0.0);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn conv2d_matches_direct_convolution_on_awkward_shapes() {
        let cases = [
            // (n, h, w, c, kh, kw, stride, pad_h, pad_w, out)
            (3, 9, 11, 5, 3, 3, 2, 0, 0, 7),
            (1, 17, 13, 4, 1, 7, 1, 0, 3, 6),
            (2, 8, 8, 3, 7, 1, 1, 3, 0, 5),
            (4, 6, 5, 9, 1, 1, 1, 0, 0, 13),
            (2, 5, 5, 2, 5, 5, 1, 2, 2, 3),
            (1, 40, 40, 3, 3, 3, 1, 1, 1, 33),
            (0, 5, 5, 2, 3, 3, 1, 1, 1, 3),
            (1, 2, 2, 2, 3, 3, 1, 0, 0, 3),
        ];
        for (seed, &(n, h, w, c, kh, kw, stride, pad_h, pad_w, co)) in cases.iter().enumerate() {
            let s = ImageShape { n, h, w, c };
            let conv = Conv2d { kh, kw, stride, pad_h, pad_w, out_channels: co };
            let (x, weight, bias) =
                (random(s.len(), seed as u64), random(conv.weight_len(c), 50 + seed as u64), random(co, 99));
            let want = conv_reference(&x, s, conv, &weight, &bias);
            // Written into channels 2 .. 2 + co of a wider output; the rest must stay untouched.
            let slot = ChannelSlot { channels: co + 4, offset: 2 };
            let (oh, ow) = conv.output_hw(h, w);
            let mut out = vec![-7.0; n * oh * ow * slot.channels];
            conv2d(&x, s, conv, &weight, &bias, Activation::Relu, &mut out, slot);
            for (p, px) in out.chunks(slot.channels).enumerate() {
                for (ch, &v) in px.iter().enumerate() {
                    if (2..2 + co).contains(&ch) {
                        let r = want[p * co + ch - 2];
                        assert!(
                            (f64::from(v) - r).abs() < 1e-4 * (1.0 + r.abs()),
                            "case {seed}: pixel {p} ch {ch}: {v} vs {r}"
                        );
                    } else {
                        assert_eq!(v, -7.0, "case {seed}: channel {ch} outside the slot was written");
                    }
                }
            }
        }
    }

    #[test]
    fn pooling_ignores_padding() {
        // One 3×3 single-channel image 1..9, window 3, stride 1, pad 1.
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let s = ImageShape { n: 1, h: 3, w: 3, c: 1 };
        let mut out = vec![0.0; 9];
        pool2d(&x, s, Pool2d { kind: PoolKind::Average, size: 3, stride: 1, pad: 1 }, &mut out, ChannelSlot::whole(1));
        // Corner (0, 0) averages 1, 2, 4, 5 (4 in-bounds values, not 9); the centre all nine.
        assert_eq!(out[0], 3.0);
        assert_eq!(out[4], 5.0);
        assert_eq!(out[1], (1.0 + 2.0 + 3.0 + 4.0 + 5.0 + 6.0) / 6.0);
        pool2d(&x, s, Pool2d { kind: PoolKind::Max, size: 3, stride: 1, pad: 1 }, &mut out, ChannelSlot::whole(1));
        assert_eq!(out, vec![5.0, 6.0, 6.0, 8.0, 9.0, 9.0, 8.0, 9.0, 9.0]);
        // Negative inputs: padding must not act as zeros in max pooling.
        let neg: Vec<f32> = x.iter().map(|v| -v).collect();
        pool2d(&neg, s, Pool2d { kind: PoolKind::Max, size: 3, stride: 1, pad: 1 }, &mut out, ChannelSlot::whole(1));
        assert_eq!(out[0], -1.0);
    }

    #[test]
    fn strided_pooling_matches_a_direct_loop() {
        let s = ImageShape { n: 2, h: 9, w: 7, c: 3 };
        let x = random(s.len(), 5);
        for kind in [PoolKind::Max, PoolKind::Average] {
            let pool = Pool2d { kind, size: 3, stride: 2, pad: 0 };
            let (oh, ow) = pool.output_hw(s.h, s.w);
            assert_eq!((oh, ow), (4, 3));
            let slot = ChannelSlot { channels: 5, offset: 1 };
            let mut out = vec![0.0; s.n * oh * ow * 5];
            pool2d(&x, s, pool, &mut out, slot);
            for (n, oy, ox, ch) in (0..2).flat_map(|n| {
                (0..oh).flat_map(move |oy| (0..ow).flat_map(move |ox| (0..3).map(move |ch| (n, oy, ox, ch))))
            }) {
                let window: Vec<f32> = (0..3)
                    .flat_map(|dy| (0..3).map(move |dx| (dy, dx)))
                    .map(|(dy, dx)| x[((n * s.h + 2 * oy + dy) * s.w + 2 * ox + dx) * 3 + ch])
                    .collect();
                let want = match kind {
                    PoolKind::Max => window.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                    PoolKind::Average => window.iter().sum::<f32>() / 9.0,
                };
                let got = out[((n * oh + oy) * ow + ox) * 5 + 1 + ch];
                assert!((got - want).abs() < 1e-6, "{kind:?} {n} {oy} {ox} {ch}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn bilinear_resize_matches_pytorch() {
        // torch.nn.functional.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]), size=(4, 4),
        // mode="bilinear", align_corners=False).
        let want = [1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0];
        let mut out = vec![0.0; 16];
        resize_bilinear(&[1.0, 2.0, 3.0, 4.0], ImageShape { n: 1, h: 2, w: 2, c: 1 }, 4, 4, &mut out);
        assert_eq!(out, want);
        // Two channels and two images resize independently; a constant image stays constant.
        let x: Vec<f32> = (0..2 * 3 * 3 * 2).map(|i| if i % 2 == 0 { 0.5 } else { (i / 2) as f32 }).collect();
        let mut out = vec![0.0; 2 * 7 * 5 * 2];
        resize_bilinear(&x, ImageShape { n: 2, h: 3, w: 3, c: 2 }, 7, 5, &mut out);
        assert!(out.chunks(2).all(|px| px[0] == 0.5));
        assert_eq!(out[1], 0.0);
        assert_eq!(out[out.len() - 1], 17.0);
    }
}
