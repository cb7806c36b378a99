//! Every kernel against the CPU backend on awkward shapes (1 × 101 × 255, 60³, sizes that are
//! not multiples of the tile, empty batches). The bodies are generic over the runtime; the
//! modules at the bottom run them on each runtime compiled in.

use cubecl::prelude::*;
use rand::{Rng, SeedableRng};

use super::{Cube, CubeBuffer};
use crate::{Activation, AdamStep, Backend, Cpu, Transpose};

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

fn up<R: Runtime>(gpu: &Cube<R>, v: &[f32]) -> CubeBuffer {
    gpu.upload(v)
}

fn check_gemm<R: Runtime>(gpu: &Cube<R>) {
    let cpu = Cpu::new();
    for (case, &(m, n, k)) in
        [(1, 101, 255), (60, 60, 60), (17, 5, 33), (3, 16, 16), (5, 7, 0), (0, 4, 3)].iter().enumerate()
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
                cpu.gemm(m, n, k, &a, ta, &b, tb, &mut want, alpha, beta);
                let mut c = up(gpu, &c0);
                gpu.gemm(m, n, k, &up(gpu, &a), ta, &up(gpu, &b), tb, &mut c, alpha, beta);
                assert_close(
                    &gpu.download(&c),
                    &want,
                    1e-4,
                    &format!("gemm {m}×{n}×{k} {ta:?} {tb:?} α {alpha} β {beta}"),
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
        let x = random(len, 4);
        let mut want = vec![0.0; rows];
        cpu.row_squared_norms(&x, rows, cols, &mut want);
        let mut got = gpu.zeros(rows);
        gpu.row_squared_norms(&up(gpu, &x), rows, cols, &mut got);
        assert_close(&gpu.download(&got), &want, 1e-4, &format!("row_squared_norms {rows}×{cols}"));

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

        let factors = random(rows, 7);
        let mut want = x.clone();
        cpu.scale_rows(&mut want, rows, cols, &factors);
        let mut got = up(gpu, &x);
        gpu.scale_rows(&mut got, rows, cols, &up(gpu, &factors));
        assert_close(&gpu.download(&got), &want, 1e-6, "scale_rows");
    }
}

fn check_adam<R: Runtime>(gpu: &Cube<R>) {
    let cpu = Cpu::new();
    for len in [1usize, 1000, 70_001] {
        let (p0, g) = (random(len, 8), random(len, 9));
        let (m0, v0) = (random(len, 10), random(len, 11).iter().map(|v| v.abs()).collect::<Vec<_>>());
        let step = AdamStep::new(1e-3, 7);
        let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
        cpu.adam(&mut p, &g, &mut m, &mut v, len, step, None);
        let (mut gp, mut gm, mut gv) = (up(gpu, &p0), up(gpu, &m0), up(gpu, &v0));
        gpu.adam(&mut gp, &up(gpu, &g), &mut gm, &mut gv, len, step);
        assert_close(&gpu.download(&gp), &p, 1e-5, "adam p");
        assert_close(&gpu.download(&gm), &m, 1e-5, "adam m");
        assert_close(&gpu.download(&gv), &v, 1e-5, "adam v");
    }
}

/// Stamps out one `#[test]` per check for a runtime on its default device.
macro_rules! runtime_tests {
    ($runtime:ty) => {
        fn backend() -> Cube<$runtime> {
            Cube::new(&Default::default())
        }

        #[test]
        fn gemm_matches_cpu() {
            check_gemm(&backend());
        }

        #[test]
        fn elementwise_ops_match_cpu() {
            check_elementwise(&backend());
        }

        #[test]
        fn adam_matches_cpu() {
            check_adam(&backend());
        }
    };
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use super::*;
    runtime_tests!(cubecl::wgpu::WgpuRuntime);
}
