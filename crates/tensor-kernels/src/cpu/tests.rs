//! The CPU backend against references: GEMM and the blocked linear layer against a naive f64
//! product, element-wise ops and Adam against hand-computed values, the noise stream's
//! statistics, the reparameterisation against finite differences, thread-count independence,
//! and short buffers refused.

use super::*;
use crate::testing::{assert_close, assert_refused, random};
use crate::{standard_normal_at, LatentShape, TrainingOps, Transpose};
/// Reference GEMM in f64 with explicit indexing.
fn naive_gemm(m: usize, n: usize, k: usize, a: &[f32], ta: Transpose, b: &[f32], tb: Transpose) -> Vec<f32> {
    let at = |i: usize, p: usize| match ta {
        Transpose::No => a[i * k + p],
        Transpose::Yes => a[p * m + i],
    };
    let bt = |p: usize, j: usize| match tb {
        Transpose::No => b[p * n + j],
        Transpose::Yes => b[j * k + p],
    };
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| f64::from(at(i, p)) * f64::from(bt(p, j))).sum::<f64>() as f32;
        }
    }
    c
}

#[test]
fn gemm_matches_naive_for_every_transpose_and_awkward_shapes() {
    let cpu = Cpu::new();
    // Below the threading threshold, then tiled by columns (ragged last tile) and by rows.
    for &(m, n, k) in &[(1, 101, 255), (60, 60, 60), (129, 7, 33), (3, 1, 1), (130, 200, 50), (300, 70, 60)] {
        for ta in [Transpose::No, Transpose::Yes] {
            for tb in [Transpose::No, Transpose::Yes] {
                let a = random(m * k, 1);
                let b = random(k * n, 2);
                let c0 = random(m * n, 3);
                let mut c = c0.clone();
                cpu.gemm(GemmShape::new(m, n, k).transposed(ta, tb), &a, &b, &mut c, 0.5, 2.0);
                let prod = naive_gemm(m, n, k, &a, ta, &b, tb);
                let want: Vec<f32> = prod.iter().zip(&c0).map(|(p, c)| 0.5 * p + 2.0 * c).collect();
                assert_close(&c, &want, 1e-4, "values");
            }
        }
    }
}

#[test]
fn gemm_is_bitwise_identical_across_thread_counts() {
    // A training-step shape (tiled by columns) and a narrow one (tiled by rows).
    for (m, n, k) in [(128, 512, 784), (700, 100, 64)] {
        identical_across_thread_counts(m, n, k);
    }
}

fn identical_across_thread_counts(m: usize, n: usize, k: usize) {
    let a = random(m * k, 8);
    let b = random(k * n, 9);
    let run = |threads: usize, ta: Transpose, tb: Transpose| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut c = vec![0.0; m * n];
            Cpu::new().gemm(GemmShape::new(m, n, k).transposed(ta, tb), &a, &b, &mut c, 1.0, 0.0);
            c
        })
    };
    for ta in [Transpose::No, Transpose::Yes] {
        for tb in [Transpose::No, Transpose::Yes] {
            let one = run(1, ta, tb);
            assert_eq!(one, run(2, ta, tb));
            assert_eq!(one, run(3, ta, tb));
        }
    }
}

#[test]
fn blocked_linear_matches_gemm_plus_bias_activation() {
    let cpu = Cpu::new();
    // The last two take the blocked path, with a partial last block.
    for &(rows, i, o) in &[(1, 3, 5), (64, 7, 9), (201, 33, 784), (600, 33, 100), (517, 2, 128)] {
        let a = random(rows * i, 11);
        let w = random(o * i, 12);
        let bias = random(o, 13);
        for act in [Activation::Identity, Activation::Relu, Activation::Sigmoid] {
            let mut want = vec![0.0; rows * o];
            let prod = naive_gemm(rows, o, i, &a, Transpose::No, &w, Transpose::Yes);
            want.copy_from_slice(&prod);
            cpu.bias_activation(&mut want, &bias, rows, o, act);
            let mut got = vec![f32::NAN; rows * o];
            cpu.linear(&a, &w, &bias, &mut got, LinearShape { rows, in_dim: i, out_dim: o }, act);
            assert_close(&got, &want, 1e-4, "values");
            let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| {
                let mut c = vec![0.0; rows * o];
                cpu.linear(&a, &w, &bias, &mut c, LinearShape { rows, in_dim: i, out_dim: o }, act);
                c
            });
            assert_eq!(got, single, "thread count changed the result");
        }
    }
}

#[test]
fn gemm_with_zero_beta_ignores_nan_in_output() {
    let cpu = Cpu::new();
    let mut c = vec![f32::NAN; 4];
    cpu.gemm(GemmShape::new(2, 2, 1), &vec![1.0, 2.0], &vec![3.0, 4.0], &mut c, 1.0, 0.0);
    assert_eq!(c, vec![3.0, 4.0, 6.0, 8.0]);
}

#[test]
fn fast_exp_is_accurate() {
    let mut worst = 0.0f64;
    let mut x = -87.0f32;
    while x < 88.0 {
        let want = f64::from(x).exp();
        worst = worst.max(((f64::from(elementwise::exp_f32(x)) - want) / want).abs());
        x += 0.01;
    }
    assert!(worst < 3e-7, "relative error {worst}");
    assert!(elementwise::sigmoid(-200.0) > 0.0 && elementwise::sigmoid(-200.0) < 1e-37);
    assert_eq!(elementwise::sigmoid(200.0), 1.0);
}

/// 2ⁿ from the rounded value's bits is, bit for bit, the float-to-int cast's 2ⁿ (the cast kept
/// exp's loops scalar), so no result changes with it: every 97th f32 of exp's range [−87, 88],
/// its edges, and the halfway points of the rounding.
#[test]
fn exp_takes_its_power_of_two_from_the_bits_as_the_cast_did() {
    let mut checked = 0u64;
    let mut check = |x: f32| {
        let (n, two_to_n) = elementwise::round_log2e(x);
        let by_cast = f32::from_bits(((n as i32 + 127) as u32) << 23);
        assert_eq!(two_to_n.to_bits(), by_cast.to_bits(), "2^n at x = {x}");
        assert_eq!(n, n.round(), "n at x = {x}");
        checked += 1;
    };
    for k in -126..=127 {
        check((k as f32 + 0.5) * std::f32::consts::LN_2);
    }
    check(-87.0);
    check(88.0);
    // −87 up to −0, then +0 up to 88.
    let mut bits = (-87.0f32).to_bits();
    while bits > 0x8000_0000 {
        check(f32::from_bits(bits));
        bits -= 97;
    }
    let mut bits = 0u32;
    while f32::from_bits(bits) <= 88.0 {
        check(f32::from_bits(bits));
        bits += 97;
    }
    assert!(checked > 20_000_000, "{checked}");
    assert!(elementwise::exp_f32(f32::NAN).is_nan());
}

#[test]
fn bias_activation_and_backward() {
    let cpu = Cpu::new();
    let mut x = vec![-1.0, 0.5, 2.0, -3.0];
    cpu.bias_activation(&mut x, &vec![0.5, -1.0], 2, 2, Activation::Relu);
    assert_eq!(x, vec![0.0, 0.0, 2.5, 0.0]);
    let mut g = vec![1.0; 4];
    cpu.activation_backward(&mut g, &x, 4, Activation::Relu);
    assert_eq!(g, vec![0.0, 0.0, 1.0, 0.0]);
    let mut s = vec![0.0, 2.0];
    cpu.bias_activation(&mut s, &vec![0.0, 0.0], 1, 2, Activation::Sigmoid);
    assert_close(&s, &[0.5, 1.0 / (1.0 + (-2.0f32).exp())], 1e-6, "values");
    let mut gs = vec![1.0, 1.0];
    cpu.activation_backward(&mut gs, &s, 2, Activation::Sigmoid);
    assert_close(&gs, &[0.25, s[1] * (1.0 - s[1])], 1e-6, "values");
    // σ″(x) = σ(1 − σ)(1 − 2σ): zero at 0, and checked by a central difference of σ′ at 2.
    let mut curv = vec![1.0, 1.0];
    cpu.activation_curvature(&mut curv, &s, 2, Activation::Sigmoid);
    let d1 = |x: f32| {
        let v = 1.0 / (1.0 + (-x).exp());
        v * (1.0 - v)
    };
    assert!(curv[0].abs() < 1e-7);
    assert!((curv[1] - (d1(2.001) - d1(1.999)) / 0.002).abs() < 1e-3, "{}", curv[1]);
    let mut r = vec![3.0];
    cpu.activation_curvature(&mut r, &vec![0.5], 1, Activation::Relu);
    assert_eq!(r, vec![0.0]);
}

#[test]
fn reductions() {
    let cpu = Cpu::new();
    let x = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let mut sums = vec![1.0; 3];
    cpu.column_sums(&x, 2, 3, &mut sums, 2.0, 1.0);
    assert_eq!(sums, vec![11.0, 15.0, 19.0]);
    // Rows of δ: (1, 2, 3), (4, 5, 6) → 14, 77; rows of a: (1, 1), (0, 2) → 2, 4.
    let mut acc = vec![1.0, 0.0];
    cpu.add_ghost_norms(&x, &vec![1.0, 1.0, 0.0, 2.0], LinearShape { rows: 2, in_dim: 2, out_dim: 3 }, &mut acc);
    assert_eq!(acc, vec![1.0 + 14.0 * 3.0, 77.0 * 5.0]);
}

#[test]
fn adam_matches_hand_computed_first_step() {
    // First step of Adam moves each parameter by lr·sign(g) (up to ε).
    let cpu = Cpu::new();
    let mut p = vec![1.0, -1.0];
    let g = vec![0.5, -2.0];
    let mut moments = (vec![0.0; 2], vec![0.0; 2]);
    cpu.adam(&mut p, &g, &mut moments, 2, AdamStep::new(0.1, 1), None);
    assert_close(&p, &[0.9, -0.9], 1e-6, "parameters");
    assert_close(&moments.0, &[0.05, -0.2], 1e-6, "first moments");
}

/// The AVX-512/AVX2 instances compute the scalar formulas bit for bit: Adam with and without
/// DP-SGD's noise, and every activation after a bias, on lengths with ragged vector tails and
/// above the threading threshold.
#[test]
fn vector_kernels_match_the_scalar_formulas_bitwise() {
    let cpu = Cpu::new();
    let len = PARALLEL_MIN + 8 * CHUNK / 3 + 5;
    let step = AdamStep::new(1e-3, 7);
    let noise = GradientNoise { std: 1.5, scale: 1.0 / 64.0, key: NoiseKey::from_u64(9, 1) };
    for noise in [None, Some(noise)] {
        let (p0, g) = (random(len, 1), random(len, 2));
        let m0: Vec<f32> = random(len, 3).iter().map(|v| v * 0.1).collect();
        let v0: Vec<f32> = random(len, 4).iter().map(|v| v * v * 0.01).collect();
        let (mut p, mut moments) = (p0.clone(), (m0.clone(), v0.clone()));
        cpu.adam(&mut p, &g, &mut moments, len, step, noise);
        // The step count through black_box: a constant powi would be folded with other roundings.
        let t = std::hint::black_box(step.t) as i32;
        let step_size = step.lr / (1.0 - step.beta1.powi(t));
        let bc2_sqrt = (1.0 - step.beta2.powi(t)).sqrt();
        for i in 0..len {
            let g = match noise {
                None => g[i],
                Some(n) => n.scale * (g[i] + n.std * standard_normal_at(n.key, i as u64)),
            };
            let m = elementwise::flush_subnormal(step.beta1 * m0[i] + (1.0 - step.beta1) * g);
            let v = elementwise::flush_subnormal(step.beta2 * v0[i] + (1.0 - step.beta2) * g * g);
            let want = p0[i] - step_size * m / (v.sqrt() / bc2_sqrt + step.eps);
            assert_eq!(
                (p[i].to_bits(), moments.0[i].to_bits(), moments.1[i].to_bits()),
                (want.to_bits(), m.to_bits(), v.to_bits()),
                "adam {noise:?} at {i}"
            );
        }
    }
    let (rows, cols) = (len / 37, 37);
    let (x0, bias) = (random(rows * cols, 5).iter().map(|v| v * 20.0).collect::<Vec<f32>>(), random(cols, 6));
    for act in [Activation::Identity, Activation::Relu, Activation::Sigmoid] {
        let mut x = x0.clone();
        cpu.bias_activation(&mut x, &bias, rows, cols, act);
        for (i, (got, x)) in x.iter().zip(&x0).enumerate() {
            let v = x + bias[i % cols];
            let want = match act {
                Activation::Identity => v,
                Activation::Relu => elementwise::flush_subnormal(v.max(0.0)),
                Activation::Sigmoid => 1.0 / (1.0 + elementwise::exp_f32(-v)),
            };
            assert_eq!(got.to_bits(), want.to_bits(), "{act:?} at {i}");
        }
    }
}

/// The subnormal-heavy state of a diverging run: units whose gradient stays zero, so Adam's
/// moments decay geometrically through the subnormal range (β₁ = 0.9 reaches it after ~830
/// steps from 1e-3), where every further step on them would take microcode assists.
#[test]
fn adam_moments_decay_to_zero_without_passing_through_subnormals() {
    let cpu = Cpu::new();
    let mut p = vec![0.5; 4];
    let mut moments = (vec![1e-3, -1e-3, 1e-30, 0.0], vec![1e-6, 1e-6, 1e-36, 0.0]);
    let zero = vec![0.0; 4];
    let mut subnormal_seen = false;
    for t in 1..=2000 {
        cpu.adam(&mut p, &zero, &mut moments, 4, AdamStep::new(1e-3, t), None);
        subnormal_seen |= moments.0.iter().chain(&moments.1).any(|v| v.is_subnormal());
    }
    assert!(!subnormal_seen, "a moment was stored subnormal");
    assert_eq!(moments.0, vec![0.0; 4], "first moments decayed to zero");
    assert!(p.iter().all(|v| v.is_finite()));
}

#[test]
fn activations_and_their_gradients_are_stored_without_subnormals() {
    let cpu = Cpu::new();
    let tiny = f32::MIN_POSITIVE / 4.0;
    assert!(tiny.is_subnormal());
    // ReLU of a subnormal pre-activation, and a subnormal gradient through an active unit.
    let mut x = vec![tiny, 1.0, -tiny];
    cpu.bias_activation(&mut x, &vec![0.0; 3], 1, 3, Activation::Relu);
    assert_eq!(x, vec![0.0, 1.0, 0.0]);
    let mut g = vec![tiny, 2.0, tiny];
    cpu.activation_backward(&mut g, &vec![1.0, 1.0, 0.0], 3, Activation::Relu);
    assert_eq!(g, vec![0.0, 2.0, 0.0]);
    // A saturated sigmoid (y ≈ 1.6e-38) times a small gradient underflows to zero, not below.
    let y = vec![1.6e-38, 0.5];
    let mut g = vec![1e-3, 1e-3];
    cpu.activation_backward(&mut g, &y, 2, Activation::Sigmoid);
    assert_eq!(g, vec![0.0, 2.5e-4]);
    // The reconstruction gradient 2·scale·(pred − target) of a saturated output pixel.
    let mut grad = vec![1.0; 2];
    cpu.squared_error(&vec![1.6e-38, 1.0], &vec![0.0, 0.0], &mut grad, 2, 1.0 / 128.0);
    assert_eq!(grad, vec![0.0, 2.0 / 128.0]);
}

#[test]
fn noise_is_standard_normal_and_independent_of_chunking() {
    let cpu = Cpu::new();
    let key = NoiseKey { offset: 11, ..NoiseKey::from_u64(7, 3) };
    let n = 100_000;
    let mut big = vec![0.0; n];
    cpu.fill_standard_normal(&mut big, n, key);
    let mean = big.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let var = big.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / n as f64 - mean * mean;
    assert!(mean.abs() < 0.02, "mean {mean}");
    assert!((var - 1.0).abs() < 0.02, "variance {var}");
    for i in [0u64, 1, 8191, 8192, 99_999] {
        assert_eq!(big[i as usize], standard_normal_at(key, i), "index {i}");
    }
    let mut small = vec![0.0; 10];
    cpu.fill_standard_normal(&mut small, 10, key);
    assert_eq!(&small[..], &big[..10]);
    // Starting at an odd position continues the same stream.
    let mut shifted = vec![0.0; 5];
    cpu.fill_standard_normal(&mut shifted, 5, NoiseKey { offset: 12, ..key });
    assert_eq!(&shifted[..], &big[1..6]);
    // Adam with fused noise equals Adam on the explicitly noised gradient.
    let g = random(n, 4);
    let noisy: Vec<f32> = g.iter().zip(&big).map(|(v, z)| 0.5 * (v + 2.0 * z)).collect();
    let start = random(n, 5);
    let (mut p1, mut m1) = (start.clone(), (vec![0.1; n], vec![0.2; n]));
    let (mut p2, mut m2) = (start, (vec![0.1; n], vec![0.2; n]));
    cpu.adam(&mut p1, &noisy, &mut m1, n, AdamStep::new(0.01, 3), None);
    let fused = GradientNoise { std: 2.0, scale: 0.5, key };
    cpu.adam(&mut p2, &g, &mut m2, n, AdamStep::new(0.01, 3), Some(fused));
    assert_eq!((p1, m1), (p2, m2));
}

#[test]
fn noise_passes_a_kolmogorov_smirnov_test() {
    // D = sup |F_n(x) − Φ(x)|; for n = 200 000 the 0.1 % critical value is 1.95/√n ≈ 0.0044.
    let n = 200_000;
    let mut z = vec![0.0; n];
    Cpu::new().fill_standard_normal(&mut z, n, NoiseKey::from_u64(123, 0));
    z.sort_by(f32::total_cmp);
    let phi = |x: f64| 0.5 * libm_erfc(-x / std::f64::consts::SQRT_2);
    let d = z
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let f = phi(f64::from(v));
            (f - i as f64 / n as f64).abs().max(((i + 1) as f64 / n as f64 - f).abs())
        })
        .fold(0.0, f64::max);
    assert!(d < 1.95 / (n as f64).sqrt(), "KS statistic {d}");
    // Same key, same noise; another key, other noise.
    let mut again = vec![0.0; 100];
    Cpu::new().fill_standard_normal(&mut again, 100, NoiseKey::from_u64(123, 0));
    let mut other = vec![0.0; 100];
    Cpu::new().fill_standard_normal(&mut other, 100, NoiseKey::from_u64(124, 0));
    let mut first = vec![0.0; 100];
    Cpu::new().fill_standard_normal(&mut first, 100, NoiseKey::from_u64(123, 0));
    assert_eq!(again, first);
    assert_ne!(again, other);
}

/// erfc by its continued-fraction-free Chebyshev fit (Numerical Recipes `erfcc`, |ε| < 1.2e-7).
fn libm_erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[test]
fn reparameterize_backward_matches_finite_differences() {
    let cpu = Cpu::new();
    let (rows, d) = (3, 2);
    let head = random(rows * 2 * d, 5);
    let eps = random(rows * d, 6);
    let wz = random(rows * d, 7); // loss = Σ wz ⊙ z + w·KL
    let w = 0.3f32;
    let loss = |h: &Vec<f32>| -> f64 {
        let mut z = vec![0.0; rows * d];
        cpu.reparameterize(h, &eps, &mut z, LatentShape { rows, latent: d });
        let mut gh = vec![0.0; rows * 2 * d];
        let kl = cpu.reparameterize_backward(h, &eps, &wz, &mut gh, LatentShape { rows, latent: d }, w);
        z.iter().zip(&wz).map(|(a, b)| f64::from(a * b)).sum::<f64>() + f64::from(w) * kl
    };
    let mut grad = vec![0.0; rows * 2 * d];
    cpu.reparameterize_backward(&head, &eps, &wz, &mut grad, LatentShape { rows, latent: d }, w);
    for i in 0..head.len() {
        let mut hp = head.clone();
        let mut hm = head.clone();
        hp[i] += 1e-3;
        hm[i] -= 1e-3;
        let fd = (loss(&hp) - loss(&hm)) / 2e-3;
        assert!((fd as f32 - grad[i]).abs() < 1e-3, "index {i}: fd {fd}, analytic {}", grad[i]);
    }
}

#[test]
fn short_buffers_are_refused_before_any_write() {
    let cpu = Cpu::new();
    let (a, b) = (vec![1.0; 6], vec![1.0; 6]);
    assert_refused(
        || Cpu::new().gemm(GemmShape::new(2, 3, 3), &vec![1.0; 5], &b, &mut vec![0.0; 6], 1.0, 0.0),
        "gemm a",
    );
    assert_refused(|| Cpu::new().gemm(GemmShape::new(2, 3, 2), &a, &b, &mut vec![0.0; 5], 1.0, 0.0), "gemm c");
    assert_refused(|| Cpu::new().axpy(1.0, &vec![1.0; 4], &mut vec![0.0; 3], 4), "axpy y");
    assert_refused(|| Cpu::new().write(&mut vec![0.0; 2], &[1.0; 3]), "write");
    let shape = LinearShape { rows: 300, in_dim: 2, out_dim: 2 };
    assert_refused(
        || {
            Cpu::new().linear(
                &vec![0.0; 600],
                &vec![0.0; 4],
                &vec![0.0; 2],
                &mut vec![0.0; 599],
                shape,
                Activation::Relu,
            )
        },
        "blocked linear out",
    );
    let mut acc = vec![0.0; 2];
    cpu.add_ghost_norms(&a, &b, LinearShape { rows: 2, in_dim: 3, out_dim: 3 }, &mut acc);
    assert_refused(
        || {
            Cpu::new().add_ghost_norms(
                &vec![1.0; 5],
                &vec![1.0; 6],
                LinearShape { rows: 2, in_dim: 3, out_dim: 3 },
                &mut vec![0.0; 2],
            )
        },
        "ghost norms delta",
    );
}
