#![allow(missing_docs)] // criterion_group! generates undocumented items.

//! Training-step and decoding benches (DESIGN.md §6 peers: PyTorch 13.8 ms per VAE step,
//! 18.4 ms with the LCD penalty, 457 ms per DP-SGD step with the authors' hooks, 35 ms to decode 5000 latents, on the 2-core
//! dev machine).

use align_fl_benches::{paper_config, paper_model, uniform};
use criterion::{criterion_group, criterion_main, Criterion};
use privacy::{Clipping, DpSgd, DpSgdSettings, NoiseSource, Sampling};
use tensor_kernels::{Backend, Cpu, Transpose};
use vae::TrainOptions;

/// A plain training step (λ_lip = 0) and the same step with LCD's penalty (λ_lip = 0.1).
fn train_steps(c: &mut Criterion) {
    for (name, lipschitz_penalty) in [("vae_train_step/cpu", 0.0), ("lcd_train_step/cpu", 0.1)] {
        let (mut model, mut adam) = paper_model();
        let batch = uniform(128, paper_config().input, 1);
        let options = TrainOptions { lipschitz_penalty, ..TrainOptions::default() };
        c.bench_function(name, |b| {
            b.iter(|| model.train_step(&batch, &options, &mut adam, None, None).expect("finite loss"))
        });
    }
}

fn dp_sgd_step(c: &mut Criterion) {
    let (mut model, mut adam) = paper_model();
    let config = paper_config();
    // One step per "epoch" of a 128-sample dataset with a full batch: fixed clipping, noise included.
    let data = uniform(128, config.input, 1);
    let options = TrainOptions::default();
    let settings = DpSgdSettings {
        noise_multiplier: 1.0,
        max_grad_norm: 1.0,
        clipping: Clipping::Fixed,
        sampling: Sampling::Shuffled,
        noise: NoiseSource::Reproducible { seed: 0 },
    };
    let mut dp = DpSgd::new(settings, 128, 128, 0).expect("valid settings");
    c.bench_function("dp_sgd_step/cpu", |b| {
        b.iter(|| dp.train_epoch(&mut model, &data, &options, &mut adam, None).expect("finite loss"))
    });
}

fn decode(c: &mut Criterion) {
    let (mut model, _) = paper_model();
    let z = uniform(5000, paper_config().latent, 2);
    c.bench_function("decode/cpu", |b| b.iter(|| model.decoder().decode(&z)));
}

fn gemm(c: &mut Criterion) {
    let cpu = Cpu::new();
    let n = 1024;
    let a = cpu.upload(&uniform(n, n, 3));
    let bm = cpu.upload(&uniform(n, n, 4));
    let mut out = cpu.zeros(n * n);
    c.bench_function("gemm_1024/cpu", |b| {
        b.iter(|| cpu.gemm(n, n, n, &a, Transpose::No, &bm, Transpose::No, &mut out, 1.0, 0.0))
    });
}

criterion_group!(benches, train_steps, dp_sgd_step, decode, gemm);
criterion_main!(benches);
