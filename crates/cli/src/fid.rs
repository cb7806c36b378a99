//! FID from the command line: image sets read from IDX files or PNG folders, feature extraction
//! with a progress bar, `align-fl fid` and `align-fl fid weights verify`, and the scorer a run
//! uses for its global decoder (DESIGN.md §2: the evaluation images against as many images
//! decoded from z ~ N(0, I)).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use metrics::{FeatureStats, Inception, INCEPTION_SHA256};
use rand::SeedableRng;
use tensor_kernels::{Backend, ImageShape};
use vae::{Decoder, LatentPrior};

use crate::config::FidConfig;

/// Images of one size, NHWC with values in [0, 1].
pub struct ImageSet {
    /// n images of h × w × c.
    pub shape: ImageShape,
    /// The values.
    pub pixels: Vec<f32>,
}

/// Reads an IDX image file (n × h × w, gzip or raw) or a folder of PNGs (gray or RGB, alpha
/// dropped, 8 or 16 bits; all of one size; read in name order).
pub fn read_image_set(path: &Path) -> Result<ImageSet> {
    if path.is_dir() {
        return read_png_folder(path);
    }
    let bytes =
        data::idx::read_decompressed(path).with_context(|| format!("reading images from {}", path.display()))?;
    let array = data::idx::parse(&bytes, path, 3)
        .with_context(|| format!("{} must be an IDX image file (n × h × w) or a folder of PNGs", path.display()))?;
    let shape = ImageShape { n: array.dims[0], h: array.dims[1], w: array.dims[2], c: 1 };
    Ok(ImageSet { shape, pixels: array.data.iter().map(|&v| f32::from(v) / 255.0).collect() })
}

/// One decoded PNG: (height, width, channels (1 or 3), values in [0, 1]).
fn read_png(path: &Path) -> Result<(usize, usize, usize, Vec<f32>)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    // Palette and low-bit images expand to 8 bits; 16-bit samples stay 16-bit.
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().with_context(|| format!("{} is not a readable PNG", path.display()))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).with_context(|| format!("{} is not a readable PNG", path.display()))?;
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

fn read_png_folder(dir: &Path) -> Result<ImageSet> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .png files; give a folder of PNGs or an IDX image file", dir.display());
    }
    let images = files.iter().map(|f| read_png(f)).collect::<Result<Vec<_>>>()?;
    let (h, w) = (images[0].0, images[0].1);
    if let Some((i, _)) = images.iter().enumerate().find(|(_, im)| (im.0, im.1) != (h, w)) {
        bail!(
            "{} is {}×{} but {} is {h}×{w}: the images of one set must share a size",
            files[i].display(),
            images[i].1,
            images[i].0,
            files[0].display()
        );
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
    Ok(ImageSet { shape: ImageShape { n: images.len(), h, w, c }, pixels })
}

/// Inception feature statistics of `set`, with a progress bar labelled `what`.
pub fn feature_stats<B: Backend>(
    model: &Inception<B>,
    set: &ImageSet,
    batch: usize,
    what: &str,
) -> Result<FeatureStats> {
    let bar = ProgressBar::new(set.shape.n as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} images {elapsed_precise} (eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("FID {what}"));
    let stats = model.feature_stats(&set.pixels, set.shape, batch, &mut |done| bar.set_position(done as u64));
    bar.finish_and_clear();
    stats.with_context(|| format!("Inception features of the {what} images"))
}

/// A warning for sets smaller than the feature dimension, or None.
pub fn small_set_warning(what: &str, stats: &FeatureStats) -> Option<String> {
    stats.rank_deficient().then(|| {
        format!(
            "warning: {} {what} images are fewer than 2048, so their feature covariance is rank-deficient: \
             the FID is computed but biased upwards and not comparable with FIDs from 2048 or more images",
            stats.n
        )
    })
}

/// Checks the weights file: its SHA-256, then every tensor's name and shape. Returns its path.
pub fn verify_weights<B: Backend>(backend: &B, explicit: Option<&Path>) -> Result<PathBuf> {
    let path = metrics::locate_inception_weights(explicit)?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let digest = data::sha256_hex(&bytes);
    if digest != INCEPTION_SHA256 {
        bail!(
            "{}: sha256 {digest}, expected {INCEPTION_SHA256}: the file is damaged or holds different weights, \
             and FIDs computed with it would not be comparable; replace it",
            path.display()
        );
    }
    Inception::from_bytes(backend, &bytes, &path)?;
    Ok(path)
}

/// FID of a run's global decoder: Inception loaded once and the evaluation images' statistics
/// computed once, then reused for every strategy and round.
pub struct FidScorer<B: Backend> {
    model: Inception<B>,
    real: FeatureStats,
    samples: usize,
    batch: usize,
}

impl<B: Backend> FidScorer<B> {
    /// Loads the weights at `weights` and scores the evaluation images (n × 784 in [0, 1]).
    pub fn new(backend: &B, weights: &Path, cfg: &FidConfig, eval_pixels: &[f32]) -> Result<Self> {
        let model = Inception::load(backend, weights)?;
        let side = data::IMAGE_SIDE;
        let real = ImageSet {
            shape: ImageShape { n: eval_pixels.len() / (side * side), h: side, w: side, c: 1 },
            pixels: eval_pixels.to_vec(),
        };
        let real = feature_stats(&model, &real, cfg.batch, "real")?;
        if let Some(w) = small_set_warning("evaluation", &real) {
            eprintln!("{w}");
        }
        Ok(FidScorer { model, real, samples: cfg.samples, batch: cfg.batch })
    }

    /// FID of `samples` images decoded from z ~ N(0, I) (seeded) against the evaluation images.
    pub fn score(&self, decoder: &mut Decoder<B>, seed: u64) -> Result<f64> {
        let latent = decoder.spec().latent;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let z = LatentPrior::StandardNormal { dim: latent }.sample(self.samples, &mut rng);
        let side = data::IMAGE_SIDE;
        let fake =
            ImageSet { shape: ImageShape { n: self.samples, h: side, w: side, c: 1 }, pixels: decoder.decode(&z) };
        let stats = feature_stats(&self.model, &fake, self.batch, "samples")?;
        Ok(metrics::frechet_distance(&self.real, &stats)?)
    }
}
