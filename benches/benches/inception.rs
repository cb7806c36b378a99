#![allow(missing_docs)] // criterion_group! generates undocumented items.

//! Inception v3 (FID graph) forward pass, batch of 8, reported per image (DESIGN.md §6 peer:
//! PyTorch 2.15 with oneDNN, 0.143 s per image on the 2-core dev machine). Needs the weights:
//! `ALIGN_FL_MODELS`, `./models`, or the repository's sibling `../shared/models`.

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use metrics::{locate_inception_weights, Inception};
use tensor_kernels::{Cpu, ImageShape};

fn inception_forward(c: &mut Criterion) {
    let sibling = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models");
    let path = match locate_inception_weights(None) {
        Ok(p) => p,
        Err(_) if sibling.join(metrics::INCEPTION_FILE).is_file() => sibling.join(metrics::INCEPTION_FILE),
        Err(e) => {
            println!("inception_forward/cpu skipped: {e}");
            return;
        }
    };
    let cpu = Cpu::new();
    let model = Inception::load(&cpu, &path).expect("valid weights");
    let batch = 8;
    let images: Vec<f32> = (0..batch * 28 * 28).map(|i| ((i * 7919) % 256) as f32 / 255.0).collect();
    let input = model.preprocess(&images, ImageShape { n: batch, h: 28, w: 28, c: 1 }).expect("valid images");
    let mut group = c.benchmark_group("inception_forward");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    // Time per image: each iteration runs the batch and reports a batch-th of its time.
    group.bench_function("cpu", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                std::hint::black_box(model.features(&input, batch));
            }
            start.elapsed() / batch as u32
        })
    });
    group.finish();
}

criterion_group!(benches, inception_forward);
criterion_main!(benches);
