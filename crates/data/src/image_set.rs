//! Image sets from disk, for FID and for a deployed client's own training images: an IDX image
//! file (n × h × w, gzip or raw) or a folder of PNGs (gray or RGB, alpha dropped, 8 or 16 bits,
//! one size per folder, read in name order).

use std::path::{Path, PathBuf};

use crate::{idx, DataError, IMAGE_SIDE};

/// n images of one size, row-major NHWC, values in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
    /// Channels per pixel (1: gray, 3: RGB).
    pub channels: usize,
    /// The values.
    pub pixels: Vec<f32>,
}

impl ImageSet {
    /// Gray images (n × side²) of side × side pixels.
    pub fn gray_squares(pixels: Vec<f32>, side: usize) -> Self {
        ImageSet { count: pixels.len() / (side * side), height: side, width: side, channels: 1, pixels }
    }

    /// Reads an IDX image file or a folder of PNGs.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        if path.is_dir() {
            return read_png_folder(path);
        }
        let bytes = idx::read_decompressed(path)?;
        let array = idx::parse(&bytes, path, 3).map_err(|e| match e {
            DataError::CorruptIdx { path, reason } => DataError::Images {
                path,
                reason: format!("{reason}; give an IDX image file (n × h × w) or a folder of PNGs"),
            },
            other => other,
        })?;
        Ok(ImageSet {
            count: array.dims[0],
            height: array.dims[1],
            width: array.dims[2],
            channels: 1,
            pixels: array.data.iter().map(|&v| f32::from(v) / 255.0).collect(),
        })
    }

    /// The images as training pixels (n × 784 in [0, 1]): the set read from `path` must hold 28 × 28
    /// gray images, at least one.
    pub fn into_training_pixels(self, path: &Path) -> Result<Vec<f32>, DataError> {
        let refuse = |reason: String| Err(DataError::Images { path: path.into(), reason });
        if self.count == 0 {
            return refuse("holds no images; give at least one 28×28 gray image".into());
        }
        if (self.height, self.width) != (IMAGE_SIDE, IMAGE_SIDE) {
            return refuse(format!(
                "holds {}×{} images; the model takes {IMAGE_SIDE}×{IMAGE_SIDE}: resize them to {IMAGE_SIDE}×{IMAGE_SIDE}",
                self.width, self.height
            ));
        }
        if self.channels != 1 {
            return refuse("holds colour images; the model takes gray ones: convert them to gray".into());
        }
        Ok(self.pixels)
    }
}

/// One decoded PNG: (height, width, channels (1 or 3), values in [0, 1]).
fn read_png(path: &Path) -> Result<(usize, usize, usize, Vec<f32>), DataError> {
    let unreadable =
        |e: png::DecodingError| DataError::Images { path: path.into(), reason: format!("not a readable PNG ({e})") };
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    // Palette and low-bit images expand to 8 bits; 16-bit samples stay 16-bit.
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(unreadable)?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(unreadable)?;
    let (h, w) = (info.height as usize, info.width as usize);
    let samples = info.color_type.samples();
    let values: Vec<f32> = match info.bit_depth {
        png::BitDepth::Sixteen => buf[..info.buffer_size()]
            .chunks_exact(2)
            .map(|b| f32::from(u16::from_be_bytes([b[0], b[1]])) / 65535.0)
            .collect(),
        _ => buf[..info.buffer_size()].iter().map(|&v| f32::from(v) / 255.0).collect(),
    };
    // Gray (+ alpha) keeps one channel, RGB (+ alpha) three; alpha is dropped.
    let keep = if samples >= 3 { 3 } else { 1 };
    let pixels = values.chunks_exact(samples).flat_map(|px| px[..keep].to_vec()).collect();
    Ok((h, w, keep, pixels))
}

fn read_png_folder(dir: &Path) -> Result<ImageSet, DataError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(DataError::Images {
            path: dir.into(),
            reason: "holds no .png files; give a folder of PNGs or an IDX image file".into(),
        });
    }
    let images = files.iter().map(|f| read_png(f)).collect::<Result<Vec<_>, _>>()?;
    let (h, w) = (images[0].0, images[0].1);
    if let Some((i, _)) = images.iter().enumerate().find(|(_, im)| (im.0, im.1) != (h, w)) {
        return Err(DataError::Images {
            path: files[i].clone(),
            reason: format!(
                "is {}×{} but {} is {h}×{w}: the images of one set must share a size",
                images[i].1,
                images[i].0,
                files[0].display()
            ),
        });
    }
    // A set mixing gray and colour images is read as colour.
    let c = images.iter().map(|im| im.2).max().unwrap_or(1);
    let mut pixels = Vec::with_capacity(images.len() * h * w * c);
    for (_, _, ci, px) in &images {
        if *ci == c {
            pixels.extend_from_slice(px);
        } else {
            pixels.extend(px.iter().flat_map(|&v| [v; 3]));
        }
    }
    Ok(ImageSet { count: images.len(), height: h, width: w, channels: c, pixels })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("align-fl-images-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_png(path: &Path, w: u32, h: u32, color: png::ColorType, data: &[u8]) {
        let mut enc = png::Encoder::new(std::fs::File::create(path).unwrap(), w, h);
        enc.set_color(color);
        enc.write_header().unwrap().write_image_data(data).unwrap();
    }

    #[test]
    fn idx_and_png_folders_give_the_same_values_and_mixed_sets_read_as_colour() {
        let dir = temp_dir("same");
        let gray: Vec<u8> = (0..12).map(|v| v * 20).collect();
        let array = idx::IdxArray { dims: vec![3, 2, 2], data: gray.clone() };
        std::fs::write(dir.join("set.idx"), idx::encode(&array)).unwrap();
        let pngs = dir.join("pngs");
        std::fs::create_dir_all(&pngs).unwrap();
        for i in 0..3 {
            write_png(&pngs.join(format!("{i}.png")), 2, 2, png::ColorType::Grayscale, &gray[i * 4..(i + 1) * 4]);
        }
        let from_idx = ImageSet::read(&dir.join("set.idx")).unwrap();
        assert_eq!((from_idx.count, from_idx.height, from_idx.width, from_idx.channels), (3, 2, 2, 1));
        assert_eq!(from_idx, ImageSet::read(&pngs).unwrap());
        assert!((from_idx.pixels[11] - 220.0 / 255.0).abs() < 1e-7);
        // One RGB image turns the set to colour; gray images are replicated across channels.
        write_png(&pngs.join("3.png"), 2, 2, png::ColorType::Rgb, &[255; 12]);
        let mixed = ImageSet::read(&pngs).unwrap();
        assert_eq!((mixed.count, mixed.channels), (4, 3));
        assert_eq!(mixed.pixels[..3], [0.0; 3]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_sets_name_the_file_and_the_problem() {
        let dir = temp_dir("bad");
        let e = ImageSet::read(&dir).unwrap_err().to_string();
        assert!(e.contains("no .png files"), "{e}");
        write_png(&dir.join("a.png"), 2, 2, png::ColorType::Grayscale, &[0; 4]);
        write_png(&dir.join("b.png"), 3, 2, png::ColorType::Grayscale, &[0; 6]);
        let e = ImageSet::read(&dir).unwrap_err().to_string();
        assert!(e.contains("b.png") && e.contains("must share a size"), "{e}");
        std::fs::write(dir.join("b.png"), b"not a png").unwrap();
        let e = ImageSet::read(&dir).unwrap_err().to_string();
        assert!(e.contains("b.png") && e.contains("not a readable PNG"), "{e}");
        let e = ImageSet::read(&dir.join("absent.idx")).unwrap_err().to_string();
        assert!(e.contains("absent.idx"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn training_pixels_are_28_by_28_gray_and_other_sets_are_refused_with_the_fix() {
        let dir = temp_dir("training");
        let side = IMAGE_SIDE as u32;
        let gray: Vec<u8> = (0..IMAGE_SIDE * IMAGE_SIDE).map(|v| (v % 256) as u8).collect();
        write_png(&dir.join("a.png"), side, side, png::ColorType::Grayscale, &gray);
        let pixels = ImageSet::read(&dir).unwrap().into_training_pixels(&dir).unwrap();
        assert_eq!(pixels.len(), IMAGE_SIDE * IMAGE_SIDE);
        assert!((pixels[255] - 1.0).abs() < 1e-7);
        let small = ImageSet::gray_squares(vec![0.5; 4 * 2], 2);
        let e = small.into_training_pixels(Path::new("small.idx")).unwrap_err().to_string();
        assert!(e.contains("small.idx: holds 2×2 images") && e.contains("resize them to 28×28"), "{e}");
        write_png(&dir.join("b.png"), side, side, png::ColorType::Rgb, &[9; IMAGE_SIDE * IMAGE_SIDE * 3]);
        let e = ImageSet::read(&dir).unwrap().into_training_pixels(&dir).unwrap_err().to_string();
        assert!(e.contains("colour images") && e.contains("convert them to gray"), "{e}");
        let empty = ImageSet::gray_squares(Vec::new(), IMAGE_SIDE);
        let e = empty.into_training_pixels(Path::new("empty.idx")).unwrap_err().to_string();
        assert!(e.contains("empty.idx: holds no images"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
