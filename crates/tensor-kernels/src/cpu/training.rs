//! The CPU's training ops: the reconstruction loss, the reparameterisation and its backward with
//! the KL term, and DP-SGD's ghost norms, clip factors and clipped gradient sums.

use rayon::prelude::*;

use super::{elementwise, gemm, Cpu, CHUNK, PARALLEL_MIN};
use crate::{check_len, GemmShape, LatentShape, LinearShape, TrainingOps, Transpose};

thread_local! {
    /// The clip-scaled deltas of [`TrainingOps::clipped_linear_grads`], kept between calls: a
    /// fresh vector per layer and step cost DP-SGD an allocation and its page faults each time.
    static SCALED_DELTAS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Σ v², with eight independent partial sums so the loop vectorises (a single running f32 sum
/// cannot be reordered by the compiler).
fn squared_norm(row: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        lanes.iter_mut().zip(c).for_each(|(l, v)| *l += v * v);
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    lanes.iter().sum::<f32>() + tail
}

impl TrainingOps for Cpu {
    fn squared_error(&self, pred: &Vec<f32>, target: &Vec<f32>, grad: &mut Vec<f32>, len: usize, scale: f32) -> f64 {
        let kernel = |g: &mut [f32], p: &[f32], t: &[f32]| -> f64 {
            let mut sum = 0.0f64;
            for ((g, p), t) in g.iter_mut().zip(p).zip(t) {
                let d = p - t;
                sum += f64::from(d * d);
                *g = elementwise::flush_subnormal(2.0 * scale * d);
            }
            sum
        };
        let (g, p, t) = (&mut grad[..len], &pred[..len], &target[..len]);
        if len < PARALLEL_MIN {
            kernel(g, p, t)
        } else {
            // Fixed chunking and an ordered sum keep the result independent of the thread count.
            let partial: Vec<f64> = g
                .par_chunks_mut(CHUNK)
                .zip(p.par_chunks(CHUNK))
                .zip(t.par_chunks(CHUNK))
                .map(|((g, p), t)| kernel(g, p, t))
                .collect();
            partial.iter().sum()
        }
    }

    fn reparameterize(&self, head: &Vec<f32>, eps: &Vec<f32>, z: &mut Vec<f32>, shape: LatentShape) {
        let LatentShape { rows, latent } = shape;
        check_len("reparameterize", "head", head.len(), rows * 2 * latent);
        for r in 0..rows {
            let h = &head[r * 2 * latent..(r + 1) * 2 * latent];
            let (mu, logvar) = h.split_at(latent);
            for j in 0..latent {
                z[r * latent + j] = mu[j] + (0.5 * logvar[j]).exp() * eps[r * latent + j];
            }
        }
    }

    fn reparameterize_backward(
        &self,
        head: &Vec<f32>,
        eps: &Vec<f32>,
        grad_z: &Vec<f32>,
        grad_head: &mut Vec<f32>,
        shape: LatentShape,
        kl_weight: f32,
    ) -> f64 {
        let LatentShape { rows, latent } = shape;
        let mut kl = 0.0f64;
        for r in 0..rows {
            for j in 0..latent {
                let mu = head[r * 2 * latent + j];
                let lv = head[r * 2 * latent + latent + j];
                let var = lv.exp();
                let e = eps[r * latent + j];
                let gz = grad_z[r * latent + j];
                kl += -0.5 * f64::from(1.0 + lv - mu * mu - var);
                grad_head[r * 2 * latent + j] = gz + kl_weight * mu;
                grad_head[r * 2 * latent + latent + j] =
                    gz * e * 0.5 * (0.5 * lv).exp() + kl_weight * 0.5 * (var - 1.0);
            }
        }
        kl
    }

    fn add_ghost_norms(&self, delta: &Vec<f32>, act: &Vec<f32>, shape: LinearShape, acc: &mut Vec<f32>) {
        let LinearShape { rows, in_dim, out_dim } = shape;
        for (i, a) in acc[..rows].iter_mut().enumerate() {
            let d = squared_norm(&delta[i * out_dim..(i + 1) * out_dim]);
            *a += d * (squared_norm(&act[i * in_dim..(i + 1) * in_dim]) + 1.0);
        }
    }

    fn clip_factors(&self, squared_norms: &Vec<f32>, rows: usize, clip_norm: f64, factors: &mut Vec<f32>) {
        for (f, &s) in factors[..rows].iter_mut().zip(&squared_norms[..rows]) {
            *f = (clip_norm / (f64::from(s).sqrt() + 1e-6)).min(1.0) as f32;
        }
    }

    fn clipped_linear_grads(
        &self,
        delta: &Vec<f32>,
        act: &Vec<f32>,
        shape: LinearShape,
        factors: &Vec<f32>,
        grad_weight: &mut Vec<f32>,
        grad_bias: &mut Vec<f32>,
    ) {
        let LinearShape { rows, in_dim, out_dim } = shape;
        // Taken out of the thread's slot and put back after: a nested call (work stolen inside
        // the GEMM) finds the slot empty and allocates its own.
        let mut scaled = SCALED_DELTAS.take();
        scaled.clear();
        scaled.extend_from_slice(&delta[..rows * out_dim]);
        for (row, f) in scaled.chunks_mut(out_dim.max(1)).zip(&factors[..rows]) {
            row.iter_mut().for_each(|v| *v *= f);
        }
        let product = GemmShape::new(out_dim, in_dim, rows).transposed(Transpose::Yes, Transpose::No);
        gemm::gemm(product, &scaled, act, grad_weight, 1.0, 0.0);
        elementwise::column_sums(&scaled, rows, out_dim, grad_bias, 1.0, 0.0);
        SCALED_DELTAS.set(scaled);
    }
}
