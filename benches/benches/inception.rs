#![allow(missing_docs)] // criterion_group! generates undocumented items.

//! Inception v3 (FID graph) forward pass, batch of 8, reported per image (DESIGN.md §6 peer:
//! PyTorch 2.15 with oneDNN, 0.143 s per image on the 2-core dev machine). Needs the weights:
//! `ALIGN_FL_MODELS`, `./models`, or the repository's sibling `../shared/models`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use metrics::{locate_inception_weights, Inception};
use tensor_kernels::{Cpu, ImageOps, ImageShape};

/// The weights file, or None (with the reason printed).
fn weights() -> Option<PathBuf> {
    let sibling = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models").join(metrics::INCEPTION_FILE);
    match locate_inception_weights(None) {
        Ok(p) => Some(p),
        Err(_) if sibling.is_file() => Some(sibling),
        Err(e) => {
            println!("inception_forward skipped: {e}");
            None
        }
    }
}

/// `inception_forward/{tag}`: a batch of 8 per iteration, reported per image; the features are
/// read back to the host, so device time is counted.
fn inception_forward_on<B: ImageOps>(c: &mut Criterion, backend: &B, tag: &str, path: &Path) {
    let model = Inception::load(backend, path).expect("valid weights");
    let batch = 8;
    let images: Vec<f32> = (0..batch * 28 * 28).map(|i| ((i * 7919) % 256) as f32 / 255.0).collect();
    let input = model.preprocess(&images, ImageShape { n: batch, h: 28, w: 28, c: 1 }).expect("valid images");
    let mut features = vec![0.0f32; batch * metrics::FEATURE_DIM];
    let mut group = c.benchmark_group("inception_forward");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function(tag, |b| {
        // On a thread of rayon's pool, as the command line runs its jobs.
        b.iter_custom(|iters| {
            tensor_kernels::on_pool_thread(|| {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    backend.read(&model.features(&input, batch), &mut features);
                }
                start.elapsed() / batch as u32
            })
        })
    });
    group.finish();
}

fn inception_forward(c: &mut Criterion) {
    let Some(path) = weights() else { return };
    inception_forward_on(c, &Cpu::new(), "cpu", &path);
    // On CUDA when built with it (lavapipe is too slow for a 23-GFLOP batch to be worth timing).
    // Every convolution kernel by name: inception_forward/cuda/direct, …/cuda/implicit-gemm.
    #[cfg(feature = "cuda")]
    match tensor_kernels::cube::cuda_unavailable() {
        Some(reason) => println!("inception_forward/cuda skipped: {reason}"),
        None => {
            use tensor_kernels::cube::{ConvKernel, Cuda, KernelChoice, Kernels};
            for &(name, conv) in ConvKernel::ALL {
                let gpu = Cuda::default_device().with_kernels(Kernels { conv, ..Kernels::default() });
                inception_forward_on(c, &gpu, &format!("cuda/{name}"), &path);
            }
        }
    }
}

criterion_group!(benches, inception_forward);
criterion_main!(benches);
