//! Shapes and parameters of the NHWC image ops (convolution, pooling, resize).

/// A batch of images stored NHWC: image, row, column, channel (channels innermost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageShape {
    /// Images in the batch.
    pub n: usize,
    /// Rows per image.
    pub h: usize,
    /// Columns per image.
    pub w: usize,
    /// Channels per pixel.
    pub c: usize,
}

impl ImageShape {
    /// Number of f32 values the batch holds.
    pub fn len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }

    /// Whether the batch holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.h * self.w * self.c
    }
}

/// Output size of a window op: ⌊(size + pads − window) / stride⌋ + 1, or 0 when the window does
/// not fit.
fn window_output(size: usize, pads: usize, window: usize, stride: usize) -> usize {
    (size + pads).checked_sub(window).map_or(0, |free| free / stride + 1)
}

/// Geometry of a 2-D convolution (kernel kh × kw, one stride for both axes, zero padding pad_h
/// rows above and below and pad_w columns left and right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    /// Kernel rows.
    pub kh: usize,
    /// Kernel columns.
    pub kw: usize,
    /// Step between output pixels, in input pixels.
    pub stride: usize,
    /// Zero rows added above and below.
    pub pad_h: usize,
    /// Zero columns added left and right.
    pub pad_w: usize,
    /// Output channels.
    pub out_channels: usize,
}

impl Conv2d {
    /// Output (rows, columns) for an h × w input.
    pub fn output_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (window_output(h, 2 * self.pad_h, self.kh, self.stride), window_output(w, 2 * self.pad_w, self.kw, self.stride))
    }

    /// Length of the [kh, kw, in, out] weight for `in_channels` inputs.
    pub fn weight_len(&self, in_channels: usize) -> usize {
        self.kh * self.kw * in_channels * self.out_channels
    }
}

/// What a pooling window computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// The largest in-bounds value (padding never wins, as with −∞ padding).
    Max,
    /// The mean of the in-bounds values (`count_include_pad = False`).
    Average,
}

/// A square pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    /// Max or average.
    pub kind: PoolKind,
    /// Window side.
    pub size: usize,
    /// Step between output pixels.
    pub stride: usize,
    /// Padding on every side (padded positions are ignored, not counted).
    pub pad: usize,
}

impl Pool2d {
    /// Output (rows, columns) for an h × w input.
    pub fn output_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (window_output(h, 2 * self.pad, self.size, self.stride), window_output(w, 2 * self.pad, self.size, self.stride))
    }
}

/// The channels an op writes in its NHWC output: `offset ..` of `channels` per pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelSlot {
    /// Channels per pixel of the output buffer.
    pub channels: usize,
    /// First channel this op writes.
    pub offset: usize,
}

impl ChannelSlot {
    /// The whole output: `channels` channels from 0.
    pub fn whole(channels: usize) -> Self {
        ChannelSlot { channels, offset: 0 }
    }
}
