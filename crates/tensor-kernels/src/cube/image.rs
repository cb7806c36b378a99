//! NHWC image kernels and their launchers, for the Inception network of FID: convolution with
//! fused bias and activation written into a channel slot (direct, or an implicit GEMM on the
//! register-blocked product), max / average pooling, and bilinear resize.

use cubecl::prelude::*;

use super::elementwise::activate;
use super::gemm::{multiply_tiles, zeroed_block};
use super::{activation_code, elementwise_grid, u32_of, ConvKernel, Cube, CubeBuffer};
use crate::{ChannelSlot, Conv2d, ConvLayer, ImageOps, ImageShape, Pool2d, PoolKind};

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

impl<R: Runtime> ImageOps for Cube<R> {
    fn conv2d(
        &self,
        x: &CubeBuffer,
        shape: ImageShape,
        conv: Conv2d,
        layer: ConvLayer<'_, CubeBuffer>,
        out: &mut CubeBuffer,
        slot: ChannelSlot,
    ) {
        let (out_h, out_w) = conv.output_hw(shape.h, shape.w);
        let len = shape.n * out_h * out_w * conv.out_channels;
        assert!(slot.offset + conv.out_channels <= slot.channels, "conv2d: channels exceed the slot");
        if len == 0 {
            return;
        }
        let pixels = shape.n * out_h * out_w;
        let geometry = (
            u32_of(shape.h),
            u32_of(shape.w),
            u32_of(shape.c),
            u32_of(out_h),
            u32_of(out_w),
            u32_of(conv.out_channels),
            u32_of(conv.kh),
            u32_of(conv.kw),
            u32_of(conv.stride),
            u32_of(conv.pad_h),
            u32_of(conv.pad_w),
        );
        let (h, w, c, oh, ow, cout, kh, kw, stride, pad_h, pad_w) = geometry;
        let (x, weight, bias, out) = (
            self.arg("conv2d", "x", x, shape.len()),
            self.arg("conv2d", "weight", layer.weight, conv.weight_len(shape.c)),
            self.arg("conv2d", "bias", layer.bias, conv.out_channels),
            self.arg("conv2d", "out", out, pixels * slot.channels),
        );
        let (slot_channels, slot_offset, act) =
            (u32_of(slot.channels), u32_of(slot.offset), activation_code(layer.act));
        // SAFETY: every input tap is bounds-checked against the image, every weight index against
        // kh·kw·c × cout; outputs stay inside the n × out_h × out_w × slot.channels output.
        unsafe {
            match self.kernels.conv {
                ConvKernel::Direct => {
                    let (count, dim) = elementwise_grid(len);
                    conv2d_direct::launch_unchecked::<f32, R>(
                        &self.client,
                        count,
                        dim,
                        x,
                        weight,
                        bias,
                        out,
                        u32_of(len),
                        h,
                        w,
                        c,
                        oh,
                        ow,
                        cout,
                        kh,
                        kw,
                        stride,
                        pad_h,
                        pad_w,
                        slot_channels,
                        slot_offset,
                        act,
                    )
                }
                ConvKernel::ImplicitGemm => conv2d_implicit_gemm::launch_unchecked::<f32, R>(
                    &self.client,
                    CubeCount::Static(cout.div_ceil(64), u32_of(pixels).div_ceil(64), 1),
                    CubeDim::new_2d(16, 16),
                    x,
                    weight,
                    bias,
                    out,
                    u32_of(pixels),
                    h,
                    w,
                    c,
                    oh,
                    ow,
                    cout,
                    kh,
                    kw,
                    stride,
                    pad_h,
                    pad_w,
                    slot_channels,
                    slot_offset,
                    act,
                ),
            }
        }
    }
    fn pool2d(&self, x: &CubeBuffer, shape: ImageShape, pool: Pool2d, out: &mut CubeBuffer, slot: ChannelSlot) {
        let (out_h, out_w) = pool.output_hw(shape.h, shape.w);
        let len = shape.n * out_h * out_w * shape.c;
        assert!(slot.offset + shape.c <= slot.channels, "pool2d: channels exceed the slot");
        if len == 0 {
            return;
        }
        let kind = match pool.kind {
            PoolKind::Max => 0,
            PoolKind::Average => 1,
        };
        let (count, dim) = elementwise_grid(len);
        // SAFETY: windows are clipped to the image; outputs stay inside the output buffer.
        unsafe {
            pool2d::launch_unchecked::<f32, R>(
                &self.client,
                count,
                dim,
                self.arg("pool2d", "x", x, shape.len()),
                self.arg("pool2d", "out", out, shape.n * out_h * out_w * slot.channels),
                u32_of(len),
                u32_of(shape.h),
                u32_of(shape.w),
                u32_of(shape.c),
                u32_of(out_h),
                u32_of(out_w),
                u32_of(slot.channels),
                u32_of(slot.offset),
                u32_of(pool.size),
                u32_of(pool.stride),
                u32_of(pool.pad),
                kind,
            )
        }
    }
    fn resize_bilinear(&self, x: &CubeBuffer, shape: ImageShape, out_h: usize, out_w: usize, out: &mut CubeBuffer) {
        let len = shape.n * out_h * out_w * shape.c;
        if len == 0 {
            return;
        }
        assert!(shape.h > 0 && shape.w > 0, "resize_bilinear: empty input image");
        let (count, dim) = elementwise_grid(len);
        // SAFETY: source taps are clamped to the image; unit i writes out[i].
        unsafe {
            resize_bilinear::launch_unchecked::<f32, R>(
                &self.client,
                count,
                dim,
                self.arg("resize_bilinear", "x", x, shape.len()),
                self.arg("resize_bilinear", "out", out, len),
                u32_of(len),
                u32_of(shape.h),
                u32_of(shape.w),
                u32_of(shape.c),
                u32_of(out_h),
                u32_of(out_w),
            )
        }
    }
}
