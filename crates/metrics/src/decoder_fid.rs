//! FID of a generative model's samples (DESIGN.md §2: the evaluation images against as many
//! images decoded from z ~ N(0, I)), and the checks on the Inception weights behind it.

use std::path::Path;

use data::ImageSet;
use rand::SeedableRng;
use tensor_kernels::{ImageOps, ImageShape};
use vae::{Decoder, LatentPrior};

use crate::{frechet_distance, FeatureStats, Inception, MetricsError};

/// Hears how many images of a set have passed through Inception.
pub trait FeatureProgress {
    /// `done` of the `total` images of the set called `what` are done.
    fn images_done(&self, what: &str, done: usize, total: usize);
}

impl<B: ImageOps> Inception<B> {
    /// Feature statistics of an image set, `batch` images at a time; `what` names the set to
    /// `progress` and in errors.
    pub fn image_set_stats(
        &self,
        set: &ImageSet,
        batch: usize,
        what: &str,
        progress: &dyn FeatureProgress,
    ) -> Result<FeatureStats, MetricsError> {
        let shape = ImageShape { n: set.count, h: set.height, w: set.width, c: set.channels };
        self.feature_stats(&set.pixels, shape, batch, &mut |done| progress.images_done(what, done, set.count))
    }
}

impl FeatureStats {
    /// A warning for sets smaller than the feature dimension (`what` names the set), or None.
    pub fn small_set_warning(&self, what: &str) -> Option<String> {
        self.rank_deficient().then(|| {
            format!(
                "warning: {} {what} images are fewer than 2048, so their feature covariance is rank-deficient: \
                 the FID is computed but biased upwards and not comparable with FIDs from 2048 or more images",
                self.n
            )
        })
    }
}

/// Checks a weights file: its SHA-256, then every tensor's name, shape and finiteness (as
/// every [`Inception::load`] does).
pub fn verify_inception_weights<B: ImageOps>(backend: &B, path: &Path) -> Result<(), MetricsError> {
    Inception::load(backend, path).map(drop)
}

/// FID of decoders against one set of real images: Inception loaded once and the real images'
/// statistics computed once, then reused for every decoder scored.
pub struct FidScorer<B: ImageOps> {
    model: Inception<B>,
    real: FeatureStats,
    side: usize,
    samples: usize,
    batch: usize,
}

impl<B: ImageOps> FidScorer<B> {
    /// Loads the weights at `weights` and scores `real`, square gray images; each later score
    /// decodes `samples` images, `batch` at a time through Inception.
    pub fn new(
        backend: &B,
        weights: &Path,
        real: &ImageSet,
        samples: usize,
        batch: usize,
        progress: &dyn FeatureProgress,
    ) -> Result<Self, MetricsError> {
        if real.height != real.width || real.channels != 1 {
            return Err(MetricsError::Shape(format!(
                "the real images are {}×{}×{}; a decoder's samples are square gray images",
                real.height, real.width, real.channels
            )));
        }
        let model = Inception::load(backend, weights)?;
        let real_stats = model.image_set_stats(real, batch, "real", progress)?;
        Ok(FidScorer { model, real: real_stats, side: real.height, samples, batch })
    }

    /// The real images' feature statistics.
    pub fn real_stats(&self) -> &FeatureStats {
        &self.real
    }

    /// FID of `samples` images decoded from z ~ N(0, I) (seeded) against the real images.
    pub fn score(
        &self,
        decoder: &mut Decoder<B>,
        seed: u64,
        progress: &dyn FeatureProgress,
    ) -> Result<f64, MetricsError> {
        if decoder.spec().output != self.side * self.side {
            return Err(MetricsError::Shape(format!(
                "the decoder writes {} values per image, the real images have {}",
                decoder.spec().output,
                self.side * self.side
            )));
        }
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let z = LatentPrior::StandardNormal { dim: decoder.spec().latent }.sample(self.samples, &mut rng);
        let fake = ImageSet::gray_squares(decoder.decode(&z), self.side);
        let stats = self.model.image_set_stats(&fake, self.batch, "samples", progress)?;
        frechet_distance(&self.real, &stats)
    }
}
