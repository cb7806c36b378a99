#![allow(missing_docs)] // criterion_group! generates undocumented items.

//! Training-step and decoding benches (DESIGN.md §6 peers: PyTorch 13.8 ms per VAE step,
//! 18.4 ms with the LCD penalty, 457 ms per DP-SGD step with the authors' hooks, 35 ms to decode 5000 latents, on the 2-core
//! dev machine).

use align_fl_benches::{paper_config, uniform};
use criterion::{criterion_group, criterion_main, Criterion};
use privacy::{Clipping, DpSgd, DpSgdSettings, NoiseSource, Sampling};
use tensor_kernels::{Backend, Cpu, Transpose};
use vae::{Adam, TrainOptions, Vae};

fn vae_train_step(c: &mut Criterion) {
    let cpu = Cpu::new();
    let config = paper_config();
    let mut model = Vae::new(&cpu, &config, 0).expect("valid config");
    let mut adam = Adam::new(&mut model, 1e-3);
    let batch = uniform(128, config.input, 1);
    let options = TrainOptions::default();
    c.bench_function("vae_train_step/cpu", |b| {
        b.iter(|| model.train_step(&batch, &options, &mut adam, None, None).expect("finite loss"))
    });
}

fn lcd_train_step(c: &mut Criterion) {
    let cpu = Cpu::new();
    let config = paper_config();
    let mut model = Vae::new(&cpu, &config, 0).expect("valid config");
    let mut adam = Adam::new(&mut model, 1e-3);
    let batch = uniform(128, config.input, 1);
    let options = TrainOptions { lipschitz_penalty: 0.1, ..TrainOptions::default() };
    c.bench_function("lcd_train_step/cpu", |b| {
        b.iter(|| model.train_step(&batch, &options, &mut adam, None, None).expect("finite loss"))
    });
}

fn dp_sgd_step(c: &mut Criterion) {
    let cpu = Cpu::new();
    let config = paper_config();
    let mut model = Vae::new(&cpu, &config, 0).expect("valid config");
    let mut adam = Adam::new(&mut model, 1e-3);
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
    let cpu = Cpu::new();
    let config = paper_config();
    let mut model = Vae::new(&cpu, &config, 0).expect("valid config");
    let z = uniform(5000, config.latent, 2);
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

criterion_group!(benches, vae_train_step, lcd_train_step, dp_sgd_step, decode, gemm);
criterion_main!(benches);
