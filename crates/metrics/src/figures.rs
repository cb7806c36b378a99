//! PNG figures: a grid of decoded samples and the 2-D latent scatter coloured by class.

use crate::MetricsError;

/// Matplotlib's tab10 palette; class c gets colour c (outlier label 10 gets black).
pub const PALETTE: [[u8; 3]; 11] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
    [0, 0, 0],
];

/// 3×5 bitmaps of the digits 0–9 (rows top to bottom, 3 bits each) for legends.
const DIGITS: [[u8; 5]; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];

/// The bytes of an 8-bit PNG of `data` (`width` × `height` pixels of `color`).
pub(crate) fn encode_png(width: usize, height: usize, color: png::ColorType, data: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, width as u32, height as u32);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    // Into memory, with `data` sized by the callers for exactly these pixels: nothing can fail.
    let mut w = enc.write_header().expect("a PNG header encodes into memory");
    w.write_image_data(data).expect("pixels matching the header encode into memory");
    drop(w);
    bytes
}

/// `images` (n × side², values in [0, 1]) as a grid `columns` wide, each pixel scaled ×2,
/// 2-pixel gaps: the bytes of an 8-bit greyscale PNG.
pub fn sample_grid(images: &[f32], side: usize, columns: usize) -> Result<Vec<u8>, MetricsError> {
    let n = images.len() / (side * side);
    if n == 0 || columns == 0 {
        return Err(MetricsError::Shape("no images to draw".into()));
    }
    const SCALE: usize = 2;
    const GAP: usize = 2;
    let rows = n.div_ceil(columns);
    let cell = side * SCALE + GAP;
    let (w, h) = (columns * cell + GAP, rows * cell + GAP);
    let mut buf = vec![255u8; w * h];
    for (i, img) in images.chunks(side * side).enumerate() {
        let (ox, oy) = (GAP + (i % columns) * cell, GAP + (i / columns) * cell);
        for y in 0..side * SCALE {
            for x in 0..side * SCALE {
                let v = img[(y / SCALE) * side + x / SCALE].clamp(0.0, 1.0);
                buf[(oy + y) * w + ox + x] = 255 - (v * 255.0).round() as u8;
            }
        }
    }
    Ok(encode_png(w, h, png::ColorType::Grayscale, &buf))
}

/// A scatter of 2-D `points` (n × 2) coloured by `labels` (0–10) with a legend of the classes
/// present: the bytes of an RGB PNG `size` pixels wide.
pub fn latent_scatter(points: &[f32], labels: &[u8], size: usize) -> Result<Vec<u8>, MetricsError> {
    if points.len() != labels.len() * 2 || labels.is_empty() {
        return Err(MetricsError::Shape(format!("{} coordinates for {} labels", points.len(), labels.len())));
    }
    let legend_h = 14;
    let (w, h) = (size, size + legend_h);
    let mut buf = vec![255u8; w * h * 3];
    let put = |buf: &mut [u8], x: usize, y: usize, c: [u8; 3]| {
        if x < w && y < h {
            buf[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&c);
        }
    };
    let finite = |v: &&f32| v.is_finite();
    let xs: Vec<f32> = points.iter().step_by(2).copied().collect();
    let ys: Vec<f32> = points.iter().skip(1).step_by(2).copied().collect();
    let range = |v: &[f32]| {
        let lo = v.iter().filter(finite).cloned().fold(f32::INFINITY, f32::min);
        let hi = v.iter().filter(finite).cloned().fold(f32::NEG_INFINITY, f32::max);
        (lo, (hi - lo).max(1e-6))
    };
    let ((x0, xr), (y0, yr)) = (range(&xs), range(&ys));
    let margin = 8.0;
    let span = size as f32 - 2.0 * margin;
    for ((x, y), &l) in xs.iter().zip(&ys).zip(labels) {
        if !x.is_finite() || !y.is_finite() {
            continue;
        }
        let px = (margin + (x - x0) / xr * span) as usize;
        let py = legend_h + (margin + (1.0 - (y - y0) / yr) * span) as usize;
        let colour = PALETTE[usize::from(l.min(10))];
        for dy in 0..3 {
            for dx in 0..3 {
                put(&mut buf, px + dx - 1, py + dy - 1, colour);
            }
        }
    }
    // Legend: a swatch and the class digit for each class present.
    let mut present: Vec<u8> = labels.to_vec();
    present.sort_unstable();
    present.dedup();
    for (slot, &c) in present.iter().enumerate() {
        let ox = 4 + slot * 22;
        for y in 3..11 {
            for x in 0..8 {
                put(&mut buf, ox + x, y, PALETTE[usize::from(c.min(10))]);
            }
        }
        let glyph = if c < 10 { DIGITS[usize::from(c)] } else { [0, 0, 7, 0, 0] };
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..3 {
                if bits >> (2 - gx) & 1 == 1 {
                    for s in 0..4 {
                        put(&mut buf, ox + 10 + gx * 2 + s % 2, 2 + gy * 2 + s / 2, [0, 0, 0]);
                    }
                }
            }
        }
    }
    Ok(encode_png(w, h, png::ColorType::Rgb, &buf))
}

/// Projects n × d points to 2-D: the identity for d ≤ 2 (padding d = 1 with zeros), else the
/// two leading principal components (power iteration with deflation, in f64).
pub fn project_2d(points: &[f32], d: usize) -> Vec<f32> {
    let n = points.len() / d.max(1);
    match d {
        0 => vec![0.0; 0],
        1 => points.iter().flat_map(|&v| [v, 0.0]).collect(),
        2 => points.to_vec(),
        _ => {
            let mean: Vec<f64> = (0..d)
                .map(|j| points.iter().skip(j).step_by(d).map(|&v| f64::from(v)).sum::<f64>() / n as f64)
                .collect();
            let mut cov = vec![0.0f64; d * d];
            for row in points.chunks(d) {
                for a in 0..d {
                    for b in 0..d {
                        cov[a * d + b] += (f64::from(row[a]) - mean[a]) * (f64::from(row[b]) - mean[b]);
                    }
                }
            }
            let mut components = Vec::new();
            for _ in 0..2 {
                let mut v = vec![1.0 / (d as f64).sqrt(); d];
                v[0] += 0.1;
                for _ in 0..500 {
                    let mut next: Vec<f64> = (0..d).map(|a| (0..d).map(|b| cov[a * d + b] * v[b]).sum()).collect();
                    let norm = next.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
                    next.iter_mut().for_each(|x| *x /= norm);
                    v = next;
                }
                let lambda: f64 = (0..d).map(|a| v[a] * (0..d).map(|b| cov[a * d + b] * v[b]).sum::<f64>()).sum();
                for a in 0..d {
                    for b in 0..d {
                        cov[a * d + b] -= lambda * v[a] * v[b];
                    }
                }
                components.push(v);
            }
            points
                .chunks(d)
                .flat_map(|row| {
                    components
                        .iter()
                        .map(|c| (0..d).map(|j| (f64::from(row[j]) - mean[j]) * c[j]).sum::<f64>() as f32)
                        .collect::<Vec<_>>()
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pngs_decode_with_the_expected_size() {
        let grid = sample_grid(&[0.5; 12 * 4], 2, 5).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(grid));
        let info = dec.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (5 * 6 + 2, 3 * 6 + 2));
        let scatter = latent_scatter(&[0.0, 0.0, 1.0, 1.0, 0.5, f32::NAN], &[0, 3, 10], 100).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(scatter));
        let info = dec.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (100, 114));
    }

    #[test]
    fn pca_finds_the_dominant_direction() {
        // Points along (1, 1, 0) with small noise in z: the first component is ±(1,1,0)/√2.
        let pts: Vec<f32> = (0..50)
            .flat_map(|i| {
                let t = i as f32 - 25.0;
                [t, t, (i % 3) as f32 * 0.01]
            })
            .collect();
        let p = project_2d(&pts, 3);
        let spread = |k: usize| p.iter().skip(k).step_by(2).map(|v| v * v).sum::<f32>();
        assert!(spread(0) > 1000.0 * spread(1));
    }
}
