#![allow(missing_docs)] // criterion_group! generates undocumented items.

//! Training-step, decoding, clip-step and GEMM benches per backend: `…/cpu` always, `…/wgpu` and `…/cuda`
//! in builds with those features (DESIGN.md §6 peers: PyTorch 13.8 ms per VAE step, 18.4 ms with
//! the LCD penalty, 457 ms per DP-SGD step with the authors' hooks, 35 ms to decode 5000
//! latents, on the 2-core dev machine). Every timed step ends by reading a result back from the
//! device (the loss, the decoded images), and the GEMM and clip-step benches call `Backend::sync`, so
//! device time is counted.

use align_fl_benches::{paper_config, paper_model, uniform};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use privacy::{AdaptiveClipping, ClippingRule, DpSgd, DpSgdSettings, NoiseSource, Sampling};
use std::time::Instant;
use tensor_kernels::{on_pool_thread, Backend, Cpu, GemmShape, LinearShape, TrainingOps, Transpose};
use vae::TrainOptions;

/// A plain training step (λ_lip = 0) and the same step with LCD's penalty (λ_lip = 0.1).
fn train_steps<B: TrainingOps>(c: &mut Criterion, backend: &B, tag: &str) {
    for (name, lipschitz_penalty) in [("vae_train_step", 0.0), ("lcd_train_step", 0.1)] {
        let name = format!("{name}/{tag}");
        let (mut model, mut adam) = paper_model(backend);
        let batch = uniform(128, paper_config().input, 1);
        let options = TrainOptions { lipschitz_penalty, ..TrainOptions::default() };
        synced(c, &name, backend, || {
            black_box(model.train_step(&batch, &options, &mut adam, None, None).expect("finite loss"));
        });
    }
}

fn dp_sgd_step<B: TrainingOps>(c: &mut Criterion, backend: &B, tag: &str) {
    let (mut model, mut adam) = paper_model(backend);
    let config = paper_config();
    // One step per "epoch" of a 128-sample dataset with a full batch: fixed clipping, noise included.
    let data = uniform(128, config.input, 1);
    let options = TrainOptions::default();
    let settings = DpSgdSettings {
        noise_multiplier: 1.0,
        max_grad_norm: 1.0,
        clipping: ClippingRule::Fixed,
        adaptive: AdaptiveClipping { target_quantile: 0.5, learning_rate: 0.2, count_noise: 6.4 },
        sampling: Sampling::Shuffled,
        noise: NoiseSource::Reproducible,
        seed: 0,
        scope: vae::GradientScope::WholeModel,
    };
    let mut dp = DpSgd::new(settings, 128, 128, 0).expect("valid settings");
    synced(c, &format!("dp_sgd_step/{tag}"), backend, || {
        black_box(dp.train_epoch(&mut model, &data, &options, &mut adam, None).expect("finite loss"));
    });
}

fn decode<B: TrainingOps>(c: &mut Criterion, backend: &B, tag: &str) {
    let (mut model, _) = paper_model(backend);
    let z = uniform(5000, paper_config().latent, 2);
    synced(c, &format!("decode/{tag}"), backend, || {
        black_box(model.decoder().decode(&z));
    });
}

/// An n³ sgemm.
fn gemm<B: Backend>(c: &mut Criterion, backend: &B, tag: &str, n: usize) {
    let a = backend.upload(&uniform(n, n, 3));
    let bm = backend.upload(&uniform(n, n, 4));
    let mut out = backend.zeros(n * n);
    synced(c, &format!("gemm_{n}/{tag}"), backend, || {
        backend.gemm(GemmShape::new(n, n, n), &a, &bm, &mut out, 1.0, 0.0);
    });
}

/// DP-SGD's fused clip step on the paper model's widest layer (128 samples, 784 → 512): clip
/// factors from the squared norms, then Σᵢ fᵢ δᵢ aᵢᵀ and Σᵢ fᵢ δᵢ (`clip_step/{tag}`); beside it the
/// same layer's unclipped weight gradient δᵀa (`weight_grad/{tag}`), the floor it is measured
/// against.
fn clip_step<B: TrainingOps>(c: &mut Criterion, backend: &B, tag: &str) {
    let (rows, out_dim, in_dim) = (128, 512, 784);
    let delta = backend.upload(&uniform(rows, out_dim, 5));
    let act = backend.upload(&uniform(rows, in_dim, 6));
    let squared = backend.upload(&uniform(rows, 1, 7).iter().map(|v| 4.0 * v * v).collect::<Vec<_>>());
    let (mut factors, mut grad_w, mut grad_b) =
        (backend.zeros(rows), backend.zeros(out_dim * in_dim), backend.zeros(out_dim));
    let layer = LinearShape { rows, in_dim, out_dim };
    synced(c, &format!("clip_step/{tag}"), backend, || {
        backend.clip_factors(&squared, rows, 0.5, &mut factors);
        backend.clipped_linear_grads(&delta, &act, layer, &factors, &mut grad_w, &mut grad_b);
    });
    let weight_grad = GemmShape::new(out_dim, in_dim, rows).transposed(Transpose::Yes, Transpose::No);
    synced(c, &format!("weight_grad/{tag}"), backend, || {
        backend.gemm(weight_grad, &delta, &act, &mut grad_w, 1.0, 0.0);
    });
}

/// Times `step` with `backend` synchronised before each reading of the clock. The steps run on a
/// thread of rayon's pool, as the command line runs its jobs ([`tensor_kernels::on_pool_thread`]).
fn synced<B: Backend>(c: &mut Criterion, name: &str, backend: &B, mut step: impl FnMut() + Send) {
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            on_pool_thread(|| {
                backend.sync();
                let start = Instant::now();
                for _ in 0..iters {
                    step();
                }
                backend.sync();
                start.elapsed()
            })
        })
    });
}

fn all_steps<B: TrainingOps>(c: &mut Criterion, backend: &B, tag: &str) {
    train_steps(c, backend, tag);
    dp_sgd_step(c, backend, tag);
    decode(c, backend, tag);
    clip_step(c, backend, tag);
    gemm(c, backend, tag, 1024);
}

fn cpu(c: &mut Criterion) {
    all_steps(c, &Cpu::new(), "cpu");
}

/// `gemm_{n}/{tag}/{kernel}` for every GEMM kernel of the CubeCL backend, side by side.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn gemm_kernels<R: tensor_kernels::cube::Runtime>(
    c: &mut Criterion,
    device: &tensor_kernels::cube::Cube<R>,
    tag: &str,
    n: usize,
) {
    use tensor_kernels::cube::{GemmKernel, KernelChoice};
    for &(name, kernel) in GemmKernel::ALL {
        let gpu = device.clone().with_kernels(tensor_kernels::cube::Kernels { gemm: kernel, ..device.kernels() });
        gemm(c, &gpu, &format!("{tag}/{name}"), n);
    }
}

/// Every compiled-in GPU backend with its default kernels (from `ALIGN_FL_GEMM` / `ALIGN_FL_CONV`
/// when set), then every GEMM kernel by name: wgpu (lavapipe on a CPU-only machine: a
/// correctness vehicle, slow, so its kernel comparison is at 256³) and CUDA (skipped with the
/// reason when no NVIDIA driver or CUDA headers are present; kernels compared at 1024³ and 4096³).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn gpu(c: &mut Criterion) {
    let kernels = tensor_kernels::cube::Kernels::from_env().expect("valid ALIGN_FL_GEMM / ALIGN_FL_CONV");
    #[cfg(feature = "wgpu")]
    {
        let gpu = tensor_kernels::cube::Wgpu::default_device().with_kernels(kernels);
        all_steps(c, &gpu, "wgpu");
        gemm_kernels(c, &gpu, "wgpu", 256);
    }
    #[cfg(feature = "cuda")]
    match tensor_kernels::cube::cuda_unavailable() {
        Some(reason) => println!("cuda benches skipped: {reason}"),
        None => {
            let gpu = tensor_kernels::cube::Cuda::default_device().with_kernels(kernels);
            all_steps(c, &gpu, "cuda");
            gemm(c, &gpu, "cuda", 4096);
            gemm_kernels(c, &gpu, "cuda", 1024);
            gemm_kernels(c, &gpu, "cuda", 4096);
        }
    }
}

criterion_group!(cpu_benches, cpu);
#[cfg(any(feature = "wgpu", feature = "cuda"))]
criterion_group! {
    name = gpu_benches;
    config = Criterion::default().sample_size(10);
    targets = gpu
}
#[cfg(any(feature = "wgpu", feature = "cuda"))]
criterion_main!(cpu_benches, gpu_benches);
#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
criterion_main!(cpu_benches);
