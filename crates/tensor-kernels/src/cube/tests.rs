//! Every kernel against the CPU backend on awkward shapes (1 × 101 × 255, 60³, sizes that are
//! not multiples of the tile, empty batches). The bodies are generic over the runtime; the
//! modules at the bottom run them on each runtime compiled in.

use cubecl::prelude::*;

use super::{ConvKernel, Cube, CubeBuffer, GemmKernel, KernelChoice, Kernels};
use crate::testing::{assert_close, assert_refused, random, refusal};
use crate::{
    Activation, AdamStep, Backend, ChannelSlot, Conv2d, ConvLayer, Cpu, GemmShape, GradientNoise, ImageOps, ImageShape,
    LatentShape, LinearShape, NoiseKey, Pool2d, PoolKind, TrainingOps, Transpose,
};

fn up<R: Runtime>(gpu: &Cube<R>, v: &[f32]) -> CubeBuffer {
    gpu.upload(v)
}

/// Every GEMM kernel against the CPU on awkward shapes, all transposes, β = 0 and β ≠ 0 (shapes
/// with k and n multiples of 4 take the register-blocked kernel's vector loads when untransposed).
fn check_gemm<R: Runtime>(device: &Cube<R>) {
    for &(name, kernel) in GemmKernel::ALL {
        let gpu = &device.clone().with_kernels(Kernels { gemm: kernel, ..Kernels::default() });
        check_gemm_kernel(gpu, name);
    }
}

fn check_gemm_kernel<R: Runtime>(gpu: &Cube<R>, name: &str) {
    let cpu = Cpu::new();
    for (case, &(m, n, k)) in [
        (1, 101, 255),
        (60, 60, 60),
        (17, 5, 33),
        (3, 16, 16),
        (70, 130, 40),
        (68, 132, 36),
        (5, 7, 0),
        (6, 8, 0),
        (0, 4, 3),
    ]
    .iter()
    .enumerate()
    {
        for (ta, tb) in [
            (Transpose::No, Transpose::No),
            (Transpose::Yes, Transpose::No),
            (Transpose::No, Transpose::Yes),
            (Transpose::Yes, Transpose::Yes),
        ] {
            let (a, b, c0) =
                (random(m * k, case as u64), random(k * n, 10 + case as u64), random(m * n, 20 + case as u64));
            for (alpha, beta) in [(1.0, 0.0), (0.5, 2.0)] {
                let mut want = c0.clone();
                cpu.gemm(GemmShape::new(m, n, k).transposed(ta, tb), &a, &b, &mut want, alpha, beta);
                let mut c = up(gpu, &c0);
                gpu.gemm(GemmShape::new(m, n, k).transposed(ta, tb), &up(gpu, &a), &up(gpu, &b), &mut c, alpha, beta);
                assert_close(
                    &gpu.download(&c),
                    &want,
                    1e-4,
                    &format!("{name} gemm {m}×{n}×{k} {ta:?} {tb:?} α {alpha} β {beta}"),
                );
            }
        }
    }
}

fn check_elementwise<R: Runtime>(gpu: &Cube<R>) {
    let cpu = Cpu::new();
    for &(rows, cols) in &[(1usize, 255usize), (60, 60), (33, 7), (0, 5)] {
        let len = rows * cols;
        for act in [Activation::Identity, Activation::Relu, Activation::Sigmoid] {
            let (x, bias) = (random(len, 1), random(cols, 2));
            let mut want = x.clone();
            cpu.bias_activation(&mut want, &bias, rows, cols, act);
            let mut got = up(gpu, &x);
            gpu.bias_activation(&mut got, &up(gpu, &bias), rows, cols, act);
            assert_close(&gpu.download(&got), &want, 1e-5, &format!("bias_activation {rows}×{cols} {act:?}"));

            let grad = random(len, 3);
            let mut want_g = grad.clone();
            cpu.activation_backward(&mut want_g, &want, len, act);
            let mut got_g = up(gpu, &grad);
            gpu.activation_backward(&mut got_g, &up(gpu, &want), len, act);
            assert_close(&gpu.download(&got_g), &want_g, 1e-5, &format!("activation_backward {act:?}"));
        }
        // Ghost norms accumulate onto what is there; the activations are wider than δ.
        let (x, act, acc0) = (random(len, 4), random(rows * (cols + 300), 14), random(rows, 15));
        let mut want = acc0.iter().map(|v| v.abs()).collect::<Vec<_>>();
        let mut got = up(gpu, &want);
        let layer = LinearShape { rows, in_dim: cols + 300, out_dim: cols };
        cpu.add_ghost_norms(&x, &act, layer, &mut want);
        gpu.add_ghost_norms(&up(gpu, &x), &up(gpu, &act), layer, &mut got);
        assert_close(&gpu.download(&got), &want, 1e-4, &format!("add_ghost_norms {rows}×{cols}"));

        let out0 = random(cols, 5);
        for (alpha, beta) in [(1.0, 0.0), (-0.5, 1.5)] {
            let mut want = out0.clone();
            cpu.column_sums(&x, rows, cols, &mut want, alpha, beta);
            let mut got = up(gpu, &out0);
            gpu.column_sums(&up(gpu, &x), rows, cols, &mut got, alpha, beta);
            assert_close(&gpu.download(&got), &want, 1e-4, &format!("column_sums {rows}×{cols}"));
        }

        let y0 = random(len, 6);
        let mut want = y0.clone();
        cpu.axpy(0.3, &x, &mut want, len);
        let mut got = up(gpu, &y0);
        gpu.axpy(0.3, &up(gpu, &x), &mut got, len);
        assert_close(&gpu.download(&got), &want, 1e-6, "axpy");
    }
}

/// The clip factors and the fused clipped gradient sum of a linear layer against the CPU, on
/// shapes around the 64-wide block (the bias rides in the product's column n, which may start a
/// block of its own) and an empty batch.
fn check_clipping<R: Runtime>(gpu: &Cube<R>) {
    let cpu = Cpu::new();
    for (rows, out_dim, in_dim) in [(1, 101, 255), (60, 60, 60), (33, 17, 5), (37, 64, 63), (130, 2, 64), (0, 7, 9)] {
        let squared: Vec<f32> = random(rows, 20).iter().map(|v| 4.0 * v * v).collect();
        let mut want = vec![0.0; rows];
        cpu.clip_factors(&squared, rows, 0.9, &mut want);
        let mut factors = gpu.zeros(rows);
        gpu.clip_factors(&up(gpu, &squared), rows, 0.9, &mut factors);
        assert_close(&gpu.download(&factors), &want, 1e-6, &format!("clip_factors {rows}"));
        assert!(rows < 8 || want.iter().any(|&f| f < 1.0) && want.contains(&1.0), "both kinds of sample");

        let (delta, act) = (random(rows * out_dim, 21), random(rows * in_dim, 22));
        let (w0, b0) = (random(out_dim * in_dim, 23), random(out_dim, 24));
        let (mut want_w, mut want_b) = (w0.clone(), b0.clone());
        cpu.clipped_linear_grads(&delta, &act, LinearShape { rows, in_dim, out_dim }, &want, &mut want_w, &mut want_b);
        let (mut got_w, mut got_b) = (up(gpu, &w0), up(gpu, &b0));
        let (d, a) = (up(gpu, &delta), up(gpu, &act));
        gpu.clipped_linear_grads(&d, &a, LinearShape { rows, in_dim, out_dim }, &factors, &mut got_w, &mut got_b);
        let shape = format!("{rows}×{out_dim}×{in_dim}");
        assert_close(&gpu.download(&got_w), &want_w, 1e-4, &format!("clipped weight gradient {shape}"));
        assert_close(&gpu.download(&got_b), &want_b, 1e-4, &format!("clipped bias gradient {shape}"));
    }
}

fn check_adam<R: Runtime>(gpu: &Cube<R>) {
    let cpu = Cpu::new();
    for len in [1usize, 1000, 70_001] {
        let (p0, g) = (random(len, 8), random(len, 9));
        let (m0, v0) = (random(len, 10), random(len, 11).iter().map(|v| v.abs()).collect::<Vec<_>>());
        let step = AdamStep::new(1e-3, 7);
        let key = NoiseKey { offset: 5, ..NoiseKey::from_u64(3, 1) };
        for noise in [None, Some(GradientNoise { std: 0.7, scale: 0.25, key })] {
            let (mut p, mut mv) = (p0.clone(), (m0.clone(), v0.clone()));
            cpu.adam(&mut p, &g, &mut mv, len, step, noise);
            let (mut gp, mut gmv) = (up(gpu, &p0), (up(gpu, &m0), up(gpu, &v0)));
            gpu.adam(&mut gp, &up(gpu, &g), &mut gmv, len, step, noise);
            assert_close(&gpu.download(&gp), &p, 1e-5, "adam p");
            assert_close(&gpu.download(&gmv.0), &mv.0, 1e-5, "adam m");
            assert_close(&gpu.download(&gmv.1), &mv.1, 1e-5, "adam v");
        }
    }
}

fn check_buffers_and_losses<R: Runtime>(gpu: &Cube<R>) {
    let cpu = Cpu::new();
    // write / read / copy act on prefixes; the rest of the buffer is kept.
    let mut buf = gpu.upload(&[9.0; 7]);
    gpu.write(&mut buf, &[1.0, 2.0, 3.0]);
    let mut head = [0.0; 4];
    gpu.read(&buf, &mut head);
    assert_eq!(head, [1.0, 2.0, 3.0, 9.0]);
    let mut dst = gpu.zeros(7);
    gpu.copy(&buf, &mut dst, 2);
    assert_eq!(gpu.download(&dst), vec![1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!((gpu.len(&dst), gpu.len(&gpu.zeros(0))), (7, 0));
    assert!(gpu.all_finite(&buf, 7));
    gpu.write(&mut buf, &[f32::NAN]);
    assert!(!gpu.all_finite(&buf, 7));

    for len in [0usize, 1, 1001] {
        let (pred, target) = (random(len, 12), random(len, 13));
        let mut want_g = vec![0.0; len];
        let want = cpu.squared_error(&pred, &target, &mut want_g, len, 0.5);
        let mut got_g = gpu.zeros(len);
        let got = gpu.squared_error(&up(gpu, &pred), &up(gpu, &target), &mut got_g, len, 0.5);
        assert!((got - want).abs() <= 1e-5 * want.max(1.0), "squared_error {got} vs {want}");
        assert_close(&gpu.download(&got_g), &want_g, 1e-6, "squared_error gradient");

        let y: Vec<f32> = random(len, 14).iter().map(|v| 0.5 + 0.4 * v).collect();
        for act in [Activation::Identity, Activation::Relu, Activation::Sigmoid] {
            let grad = random(len, 15);
            let mut want = grad.clone();
            cpu.activation_curvature(&mut want, &y, len, act);
            let mut got = up(gpu, &grad);
            gpu.activation_curvature(&mut got, &up(gpu, &y), len, act);
            assert_close(&gpu.download(&got), &want, 1e-6, &format!("activation_curvature {act:?}"));
        }
    }

    for (rows, latent) in [(0usize, 2usize), (1, 2), (37, 3)] {
        let (head, eps, gz) = (random(rows * 2 * latent, 16), random(rows * latent, 17), random(rows * latent, 18));
        let mut want_z = vec![0.0; rows * latent];
        cpu.reparameterize(&head, &eps, &mut want_z, LatentShape { rows, latent });
        let mut got_z = gpu.zeros(rows * latent);
        gpu.reparameterize(&up(gpu, &head), &up(gpu, &eps), &mut got_z, LatentShape { rows, latent });
        assert_close(&gpu.download(&got_z), &want_z, 1e-5, "reparameterize");
        let mut want_h = vec![0.0; rows * 2 * latent];
        let want_kl = cpu.reparameterize_backward(&head, &eps, &gz, &mut want_h, LatentShape { rows, latent }, 0.1);
        let mut got_h = gpu.zeros(rows * 2 * latent);
        let got_kl = gpu.reparameterize_backward(
            &up(gpu, &head),
            &up(gpu, &eps),
            &up(gpu, &gz),
            &mut got_h,
            LatentShape { rows, latent },
            0.1,
        );
        assert!((got_kl - want_kl).abs() <= 1e-5 * want_kl.abs().max(1.0), "KL {got_kl} vs {want_kl}");
        assert_close(&gpu.download(&got_h), &want_h, 1e-5, "reparameterize_backward");
    }

    // The noise is generated on the device and is the CPU stream bit for bit: lengths around the
    // 64-value unit, offsets inside a unit, a 64-bit block counter whose low word carries, and a
    // stream id above 2³².
    let stream = (1u64 << 32) + 2;
    let carry = ((1u64 << 32) - 1) / 3 * 64;
    for (offset, len) in [(3, 5000), (0, 1), (61, 3), (64, 64), (1000, 65), (carry - 5, 300), (carry + 64 * 7 + 9, 130)]
    {
        let key = NoiseKey { offset, ..NoiseKey::from_u64(11, stream) };
        let mut want = vec![0.0; len];
        cpu.fill_standard_normal(&mut want, len, key);
        let mut got = gpu.zeros(len + 1);
        gpu.fill_standard_normal(&mut got, len, key);
        let got = gpu.download(&got);
        let differ = got[..len].iter().zip(&want).position(|(g, w)| g.to_bits() != w.to_bits());
        if let Some(i) = differ {
            let count = got[..len].iter().zip(&want).filter(|(g, w)| g.to_bits() != w.to_bits()).count();
            panic!("offset {offset}: {count} of {len} values differ, first at {i}: {} vs CPU {}", got[i], want[i]);
        }
        assert_eq!(got[len], 0.0, "offset {offset}: wrote past {len} values");
    }
}

fn check_image_ops<R: Runtime>(gpu: &Cube<R>) {
    for &(name, kernel) in ConvKernel::ALL {
        check_conv(&gpu.clone().with_kernels(Kernels { conv: kernel, ..Kernels::default() }), name);
    }
    check_pool_and_resize(gpu);
}

/// Every convolution kernel against the CPU: strides, asymmetric kernels and padding, 1 × 1,
/// blocks of more than 64 pixels and channels, an empty batch; written into a channel slot.
fn check_conv<R: Runtime>(gpu: &Cube<R>, name: &str) {
    let cpu = Cpu::new();
    let convs = [
        // (n, h, w, c, kh, kw, stride, pad_h, pad_w, out)
        (3, 9, 11, 5, 3, 3, 2, 0, 0, 7),
        (1, 17, 13, 4, 1, 7, 1, 0, 3, 6),
        (2, 8, 8, 3, 7, 1, 1, 3, 0, 5),
        (2, 6, 5, 9, 1, 1, 1, 0, 0, 13),
        (1, 5, 5, 2, 5, 5, 1, 2, 2, 3),
        (2, 10, 10, 20, 3, 3, 1, 1, 1, 70),
        (0, 5, 5, 2, 3, 3, 1, 1, 1, 3),
    ];
    for (case, &(n, h, w, c, kh, kw, stride, pad_h, pad_w, co)) in convs.iter().enumerate() {
        let s = ImageShape { n, h, w, c };
        let conv = Conv2d { kh, kw, stride, pad_h, pad_w, out_channels: co };
        let (x, weight, bias) =
            (random(s.len(), case as u64), random(conv.weight_len(c), 40 + case as u64), random(co, 60));
        let slot = ChannelSlot { channels: co + 3, offset: 2 };
        let (oh, ow) = conv.output_hw(h, w);
        let init = random(n * oh * ow * slot.channels, 70);
        for act in [Activation::Relu, Activation::Identity] {
            let mut want = init.clone();
            cpu.conv2d(&x, s, conv, ConvLayer { weight: &weight, bias: &bias, act }, &mut want, slot);
            let mut got = up(gpu, &init);
            let (gw, gb) = (up(gpu, &weight), up(gpu, &bias));
            gpu.conv2d(&up(gpu, &x), s, conv, ConvLayer { weight: &gw, bias: &gb, act }, &mut got, slot);
            assert_close(&gpu.download(&got), &want, 1e-4, &format!("{name} conv2d case {case} {act:?}"));
        }
    }
}

fn check_pool_and_resize<R: Runtime>(gpu: &Cube<R>) {
    let cpu = Cpu::new();
    let s = ImageShape { n: 2, h: 9, w: 7, c: 3 };
    let x = random(s.len(), 80);
    for pool in [
        Pool2d { kind: PoolKind::Max, size: 3, stride: 2, pad: 0 },
        Pool2d { kind: PoolKind::Average, size: 3, stride: 1, pad: 1 },
        Pool2d { kind: PoolKind::Max, size: 3, stride: 1, pad: 1 },
        Pool2d { kind: PoolKind::Average, size: 8, stride: 8, pad: 0 },
    ] {
        let (oh, ow) = pool.output_hw(s.h, s.w);
        let slot = ChannelSlot { channels: 5, offset: 1 };
        let init = random(s.n * oh * ow * 5, 81);
        let mut want = init.clone();
        cpu.pool2d(&x, s, pool, &mut want, slot);
        let mut got = up(gpu, &init);
        gpu.pool2d(&up(gpu, &x), s, pool, &mut got, slot);
        assert_close(&gpu.download(&got), &want, 1e-6, &format!("pool2d {pool:?}"));
    }
    for (h, w, c, oh, ow) in [(28usize, 28usize, 3usize, 299usize, 299usize), (2, 2, 1, 4, 4), (5, 3, 2, 3, 7)] {
        let s = ImageShape { n: 2, h, w, c };
        let x = random(s.len(), 90);
        let mut want = vec![0.0; 2 * oh * ow * c];
        cpu.resize_bilinear(&x, s, oh, ow, &mut want);
        let mut got = gpu.zeros(want.len());
        gpu.resize_bilinear(&up(gpu, &x), s, oh, ow, &mut got);
        assert_close(&gpu.download(&got), &want, 1e-5, &format!("resize {h}×{w} → {oh}×{ow}"));
    }
}

/// Every launcher refuses a buffer shorter than its shape needs, naming the op and the operand,
/// before a kernel could write past it; the device stays usable afterwards.
fn check_short_buffers_refused<R: Runtime>(gpu: &Cube<R>) {
    let short = |len| gpu.zeros(len);
    type Case<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let cases: Vec<Case<'_>> = vec![
        ("axpy", Box::new(|| gpu.axpy(1.0, &short(8), &mut short(7), 8))),
        ("gemm", Box::new(|| gpu.gemm(GemmShape::new(4, 4, 4), &short(16), &short(15), &mut short(16), 1.0, 0.0))),
        ("gemm", Box::new(|| gpu.gemm(GemmShape::new(4, 4, 4), &short(16), &short(16), &mut short(15), 1.0, 0.0))),
        ("copy", Box::new(|| gpu.copy(&short(10), &mut short(9), 10))),
        ("write", Box::new(|| gpu.write(&mut short(2), &[1.0; 3]))),
        (
            "adam",
            Box::new(|| gpu.adam(&mut short(5), &short(5), &mut (short(5), short(4)), 5, AdamStep::new(0.1, 1), None)),
        ),
        ("fill_standard_normal", Box::new(|| gpu.fill_standard_normal(&mut short(63), 64, NoiseKey::from_u64(1, 0)))),
        (
            "reparameterize",
            Box::new(|| gpu.reparameterize(&short(7), &short(4), &mut short(4), LatentShape { rows: 2, latent: 2 })),
        ),
        (
            "clipped_linear_grads",
            Box::new(|| {
                let layer = LinearShape { rows: 3, in_dim: 5, out_dim: 4 };
                gpu.clipped_linear_grads(&short(12), &short(15), layer, &short(3), &mut short(19), &mut short(4))
            }),
        ),
        (
            "conv2d",
            Box::new(|| {
                let (s, conv) = (
                    ImageShape { n: 1, h: 4, w: 4, c: 2 },
                    Conv2d { kh: 3, kw: 3, stride: 1, pad_h: 1, pad_w: 1, out_channels: 3 },
                );
                let (w, b) = (short(conv.weight_len(2)), short(3));
                gpu.conv2d(
                    &short(32),
                    s,
                    conv,
                    ConvLayer { weight: &w, bias: &b, act: Activation::Relu },
                    &mut short(47),
                    ChannelSlot::whole(3),
                )
            }),
        ),
    ];
    for (name, case) in cases {
        let message = refusal(case, name);
        assert!(message.contains(name) && message.contains("too short"), "{name}: {message}");
    }
    assert_refused(|| Cpu::new().axpy(1.0, &vec![1.0; 8], &mut vec![0.0; 7], 8), "cpu axpy");
    // The device still works after the refusals.
    let mut y = gpu.upload(&[1.0, 2.0]);
    gpu.axpy(2.0, &gpu.upload(&[1.0, 1.0]), &mut y, 2);
    assert_eq!(gpu.download(&y), [3.0, 4.0]);
}

/// Stamps out one `#[test]` per check for a runtime on its default device; `$unavailable` says
/// why the runtime cannot start here (the tests then print it and pass without running).
#[test]
fn kernels_are_chosen_by_name() {
    for &(name, kernel) in GemmKernel::ALL {
        assert_eq!(GemmKernel::from_name(name), Ok(kernel));
        assert_eq!(kernel.name(), name);
    }
    let e = GemmKernel::from_name("cublas").unwrap_err();
    assert_eq!((e.variable, e.name.as_str()), ("ALIGN_FL_GEMM", "cublas"));
    let e = e.to_string();
    assert!(e.contains("ALIGN_FL_GEMM") && e.contains("naive, tiled, register-blocked"), "{e}");
    assert_eq!(Kernels::default().gemm, GemmKernel::RegisterBlocked);
}

macro_rules! runtime_tests {
    ($runtime:ty, $unavailable:expr) => {
        fn run(check: impl FnOnce(&Cube<$runtime>)) {
            match $unavailable {
                Some(reason) => println!("skipped: {reason}"),
                None => check(&Cube::new(&Default::default())),
            }
        }

        #[test]
        fn gemm_matches_cpu() {
            run(check_gemm);
        }

        #[test]
        fn elementwise_ops_match_cpu() {
            run(check_elementwise);
        }

        #[test]
        fn clip_factors_and_fused_clipped_gradients_match_cpu() {
            run(check_clipping);
        }

        #[test]
        fn adam_matches_cpu() {
            run(check_adam);
        }

        #[test]
        fn buffers_losses_and_noise_match_cpu() {
            run(check_buffers_and_losses);
        }

        #[test]
        fn image_ops_match_cpu() {
            run(check_image_ops);
        }

        #[test]
        fn short_buffers_are_refused_before_launch() {
            run(check_short_buffers_refused);
        }
    };
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use super::*;
    runtime_tests!(cubecl::wgpu::WgpuRuntime, None::<String>);
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    runtime_tests!(cubecl::cuda::CudaRuntime, super::super::cuda_unavailable());
}
