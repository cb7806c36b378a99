//! Shared inputs for the criterion benches: the paper's VAE and MNIST-like batches.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor_kernels::TrainingOps;
use vae::{Adam, Vae, VaeConfig};

/// The authors' SimpleVAE: 784-512-256-128-2.
pub fn paper_config() -> VaeConfig {
    VaeConfig::paper()
}

/// `rows` × `cols` values uniform in [0, 1), seeded.
pub fn uniform(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows * cols).map(|_| rng.gen::<f32>()).collect()
}

/// The paper's VAE on `backend` with fresh Adam state (learning rate 1e-3).
pub fn paper_model<B: TrainingOps>(backend: &B) -> (Vae<B>, Adam<B>) {
    let mut model = Vae::new(backend, &paper_config(), 0).expect("valid config");
    let adam = Adam::new(&mut model, 1e-3);
    (model, adam)
}
