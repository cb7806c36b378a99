//! Latent priors a client uploads with its decoder so the server can sample it: the standard
//! normal, or a diagonal Gaussian mixture fitted by EM (Dempster, Laird, Rubin 1977) from a
//! k-means++ start (Arthur & Vassilvitskii 2007), as sklearn's `GaussianMixture(covariance_type=
//! "diag")` with `reg_covar = 1e-6`, `tol = 1e-3`.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal, WeightedIndex};
use serde::{Deserialize, Serialize};

use crate::VaeError;

/// Variance floor added in every M-step (sklearn's `reg_covar`).
const REG_COVAR: f64 = 1e-6;

/// A distribution over latents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LatentPrior {
    /// N(0, I) in `dim` dimensions.
    StandardNormal {
        /// Latent dimension.
        dim: usize,
    },
    /// A diagonal Gaussian mixture.
    Gmm(DiagonalGmm),
}

/// A Gaussian mixture with diagonal covariances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiagonalGmm {
    /// Latent dimension.
    pub dim: usize,
    /// Mixing weights (sum to 1).
    pub weights: Vec<f64>,
    /// K × dim means.
    pub means: Vec<f64>,
    /// K × dim variances.
    pub variances: Vec<f64>,
}

impl LatentPrior {
    /// Latent dimension.
    pub fn dim(&self) -> usize {
        match self {
            LatentPrior::StandardNormal { dim } => *dim,
            LatentPrior::Gmm(g) => g.dim,
        }
    }

    /// Draws `n` latents (n × dim, row-major).
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> Vec<f32> {
        match self {
            LatentPrior::StandardNormal { dim } => (0..n * dim).map(|_| StandardNormal.sample(rng)).collect(),
            LatentPrior::Gmm(g) => g.sample(n, rng),
        }
    }

    /// Checks that the prior is well formed (for priors received over the wire).
    pub fn validate(&self) -> Result<(), VaeError> {
        match self {
            LatentPrior::StandardNormal { dim } if *dim > 0 => Ok(()),
            LatentPrior::StandardNormal { .. } => Err(VaeError::Prior("dimension 0".into())),
            LatentPrior::Gmm(g) => g.validate(),
        }
    }
}

impl DiagonalGmm {
    /// Number of components.
    pub fn components(&self) -> usize {
        self.weights.len()
    }

    fn validate(&self) -> Result<(), VaeError> {
        let k = self.weights.len();
        if self.dim == 0 || k == 0 {
            return Err(VaeError::Prior("a mixture needs a dimension and a component".into()));
        }
        if self.means.len() != k * self.dim || self.variances.len() != k * self.dim {
            return Err(VaeError::Prior(format!(
                "{k} components of dimension {} need {} means and variances, got {} and {}",
                self.dim,
                k * self.dim,
                self.means.len(),
                self.variances.len()
            )));
        }
        let sum: f64 = self.weights.iter().sum();
        if !self.weights.iter().all(|w| w.is_finite() && *w >= 0.0) || (sum - 1.0).abs() > 1e-6 {
            return Err(VaeError::Prior(format!("mixing weights must be non-negative and sum to 1 (sum {sum})")));
        }
        if !self.means.iter().all(|m| m.is_finite()) || !self.variances.iter().all(|v| v.is_finite() && *v > 0.0) {
            return Err(VaeError::Prior("means must be finite and variances positive".into()));
        }
        Ok(())
    }

    /// Draws `n` samples.
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> Vec<f32> {
        let pick = WeightedIndex::new(&self.weights).expect("validated weights");
        let mut out = Vec::with_capacity(n * self.dim);
        for _ in 0..n {
            let c = pick.sample(rng);
            for j in 0..self.dim {
                let e: f64 = StandardNormal.sample(rng);
                out.push((self.means[c * self.dim + j] + self.variances[c * self.dim + j].sqrt() * e) as f32);
            }
        }
        out
    }

    /// Fits `k` components to `points` (n × dim) by EM from a k-means++ start, at most
    /// `max_iter` iterations, stopping when the mean log-likelihood improves by less than 1e-3.
    pub fn fit(points: &[f32], dim: usize, k: usize, max_iter: usize, rng: &mut impl Rng) -> Result<Self, VaeError> {
        if dim == 0 || !points.len().is_multiple_of(dim) {
            return Err(VaeError::Prior(format!("{} values are not rows of dimension {dim}", points.len())));
        }
        let n = points.len() / dim;
        if n < k || k == 0 {
            return Err(VaeError::Prior(format!("cannot fit {k} components to {n} points")));
        }
        if !points.iter().all(|p| p.is_finite()) {
            return Err(VaeError::Prior("latents contain NaN or infinity".into()));
        }
        let x: Vec<f64> = points.iter().map(|&p| f64::from(p)).collect();
        let means = kmeans_plus_plus(&x, dim, k, rng);
        // Initial responsibilities: hard assignment to the nearest centre (sklearn's k-means init).
        let mut resp = vec![0.0f64; n * k];
        for i in 0..n {
            let row = &x[i * dim..(i + 1) * dim];
            let (best, _) = nearest(row, &means, dim);
            resp[i * k + best] = 1.0;
        }
        let mut gmm =
            DiagonalGmm { dim, weights: vec![0.0; k], means: vec![0.0; k * dim], variances: vec![0.0; k * dim] };
        gmm.m_step(&x, &resp);
        let mut last = f64::NEG_INFINITY;
        for _ in 0..max_iter {
            let ll = gmm.e_step(&x, &mut resp);
            gmm.m_step(&x, &resp);
            if (ll - last).abs() < 1e-3 {
                break;
            }
            last = ll;
        }
        gmm.validate()?;
        Ok(gmm)
    }

    /// Responsibilities from the current parameters; returns the mean log-likelihood.
    fn e_step(&self, x: &[f64], resp: &mut [f64]) -> f64 {
        let (k, d) = (self.weights.len(), self.dim);
        let n = x.len() / d;
        let log_norm: Vec<f64> = (0..k)
            .map(|c| {
                self.weights[c].ln()
                    - 0.5 * (0..d).map(|j| (std::f64::consts::TAU * self.variances[c * d + j]).ln()).sum::<f64>()
            })
            .collect();
        let mut total = 0.0;
        for i in 0..n {
            let row = &x[i * d..(i + 1) * d];
            let r = &mut resp[i * k..(i + 1) * k];
            for c in 0..k {
                let q: f64 = (0..d).map(|j| (row[j] - self.means[c * d + j]).powi(2) / self.variances[c * d + j]).sum();
                r[c] = log_norm[c] - 0.5 * q;
            }
            let max = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + r.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            r.iter_mut().for_each(|v| *v = (*v - lse).exp());
            total += lse;
        }
        total / n as f64
    }

    fn m_step(&mut self, x: &[f64], resp: &[f64]) {
        let (k, d) = (self.weights.len(), self.dim);
        let n = x.len() / d;
        let mut nk = vec![10.0 * f64::EPSILON; k];
        let mut sum = vec![0.0; k * d];
        let mut sum_sq = vec![0.0; k * d];
        for i in 0..n {
            for c in 0..k {
                let r = resp[i * k + c];
                if r == 0.0 {
                    continue;
                }
                nk[c] += r;
                for j in 0..d {
                    let v = x[i * d + j];
                    sum[c * d + j] += r * v;
                    sum_sq[c * d + j] += r * v * v;
                }
            }
        }
        for c in 0..k {
            self.weights[c] = nk[c] / n as f64;
            for j in 0..d {
                let mean = sum[c * d + j] / nk[c];
                self.means[c * d + j] = mean;
                self.variances[c * d + j] = (sum_sq[c * d + j] / nk[c] - mean * mean).max(0.0) + REG_COVAR;
            }
        }
        let total: f64 = self.weights.iter().sum();
        self.weights.iter_mut().for_each(|w| *w /= total);
    }
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, with sklearn's 2 + ln k candidates per
/// centre) followed by Lloyd iterations; the best of [`KMEANS_RESTARTS`] runs by inertia.
fn kmeans_plus_plus(x: &[f64], d: usize, k: usize, rng: &mut impl Rng) -> Vec<f64> {
    (0..KMEANS_RESTARTS)
        .map(|_| lloyd(x, d, seed_centres(x, d, k, rng)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(centres, _)| centres)
        .expect("at least one restart")
}

/// Independent k-means runs; the one with the lowest inertia initialises EM.
const KMEANS_RESTARTS: usize = 3;

/// The centre (of `centres`, k × d) nearest to `row` and its squared distance; the first of equals.
/// A plain `<` scan: the distances are finite (fit refuses other latents), and `min_by` with
/// `total_cmp` made this loop most of a k-means run.
fn nearest(row: &[f64], centres: &[f64], d: usize) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (c, centre) in centres.chunks_exact(d).enumerate() {
        let dist = sq_dist(row, centre);
        if dist < best.1 {
            best = (c, dist);
        }
    }
    best
}

fn seed_centres(x: &[f64], d: usize, k: usize, rng: &mut impl Rng) -> Vec<f64> {
    let n = x.len() / d;
    let trials = 2 + (k as f64).ln() as usize;
    let first = rng.gen_range(0..n);
    let mut centres = x[first * d..(first + 1) * d].to_vec();
    let mut closest: Vec<f64> = (0..n).map(|i| sq_dist(&x[i * d..(i + 1) * d], &centres)).collect();
    for _ in 1..k {
        let total: f64 = closest.iter().sum();
        let mut best: Option<(f64, usize, Vec<f64>)> = None;
        for _ in 0..trials {
            let pick = if total > 0.0 {
                let mut target = rng.gen::<f64>() * total;
                closest
                    .iter()
                    .position(|&w| {
                        target -= w;
                        target <= 0.0
                    })
                    .unwrap_or(n - 1)
            } else {
                rng.gen_range(0..n)
            };
            let cand = &x[pick * d..(pick + 1) * d];
            let updated: Vec<f64> =
                closest.iter().enumerate().map(|(i, &c)| c.min(sq_dist(&x[i * d..(i + 1) * d], cand))).collect();
            let potential: f64 = updated.iter().sum();
            if best.as_ref().is_none_or(|b| potential < b.0) {
                best = Some((potential, pick, updated));
            }
        }
        let (_, pick, updated) = best.expect("at least one trial");
        centres.extend_from_slice(&x[pick * d..(pick + 1) * d]);
        closest = updated;
    }
    centres
}

/// For each of the n points (`columns`: the d coordinates, each a column of n values), the
/// nearest of `centres` (k × d) into `best` and its squared distance into `dist`, the first of
/// equals, as [`nearest`] finds them bit for bit: centre by centre, coordinate by coordinate, so
/// the distance loop runs over the points and vectorises.
fn assign_nearest(columns: &[f64], n: usize, centres: &[f64], best: &mut [usize], dist: &mut [f64]) {
    let d = columns.len() / n;
    let mut acc = vec![0.0f64; n];
    best.fill(0);
    dist.fill(f64::INFINITY);
    for (c, centre) in centres.chunks_exact(d).enumerate() {
        acc.fill(0.0);
        for (column, &m) in columns.chunks_exact(n).zip(centre) {
            acc.iter_mut().zip(column).for_each(|(a, &v)| *a += (v - m) * (v - m));
        }
        for ((b, nd), &a) in best.iter_mut().zip(dist.iter_mut()).zip(&acc) {
            if a < *nd {
                *nd = a;
                *b = c;
            }
        }
    }
}

/// Lloyd iterations from `centres`; returns the centres and their inertia.
fn lloyd(x: &[f64], d: usize, mut centres: Vec<f64>) -> (Vec<f64>, f64) {
    let k = centres.len() / d;
    let n = x.len() / d;
    let columns: Vec<f64> = (0..d).flat_map(|j| x.iter().skip(j).step_by(d).copied()).collect();
    let (mut best, mut nearest_dist) = (vec![0usize; n], vec![0.0f64; n]);
    let mut inertia = f64::INFINITY;
    for _ in 0..100 {
        assign_nearest(&columns, n, &centres, &mut best, &mut nearest_dist);
        let mut sums = vec![0.0; k * d];
        let mut counts = vec![0usize; k];
        inertia = 0.0;
        for ((row, &c), &dist) in x.chunks(d).zip(&best).zip(&nearest_dist) {
            inertia += dist;
            counts[c] += 1;
            (0..d).for_each(|j| sums[c * d + j] += row[j]);
        }
        let mut moved = 0.0;
        for c in (0..k).filter(|&c| counts[c] > 0) {
            for j in 0..d {
                let m = sums[c * d + j] / counts[c] as f64;
                moved += (m - centres[c * d + j]).abs();
                centres[c * d + j] = m;
            }
        }
        if moved < 1e-9 {
            break;
        }
    }
    (centres, inertia)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    #[allow(clippy::needless_range_loop)] // j indexes the fitted and the true means together.
    fn gmm_recovers_a_known_mixture() {
        let truth = DiagonalGmm {
            dim: 2,
            weights: vec![0.2, 0.3, 0.5],
            means: vec![-5.0, 0.0, 0.0, 5.0, 6.0, -3.0],
            variances: vec![0.5, 1.0, 0.25, 0.25, 1.0, 0.5],
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let points = truth.sample(20_000, &mut rng);
        let fit = DiagonalGmm::fit(&points, 2, 3, 200, &mut rng).unwrap();
        for c in 0..3 {
            // Match each true component to the fitted component with the nearest mean.
            let m = &truth.means[2 * c..2 * c + 2];
            let f = (0..3)
                .min_by(|&a, &b| {
                    let da = sq_dist(&fit.means[2 * a..2 * a + 2], m);
                    let db = sq_dist(&fit.means[2 * b..2 * b + 2], m);
                    da.total_cmp(&db)
                })
                .unwrap();
            assert!((fit.weights[f] - truth.weights[c]).abs() < 0.02, "weight of component {c}: {fit:?}");
            for j in 0..2 {
                assert!((fit.means[2 * f + j] - m[j]).abs() < 0.05, "mean {c},{j}");
                let (vf, vt) = (fit.variances[2 * f + j], truth.variances[2 * c + j]);
                assert!((vf / vt - 1.0).abs() < 0.1, "variance {c},{j}: {vf} vs {vt}");
            }
        }
    }

    /// The column-wise assignment of Lloyd's iterations picks what a row-by-row scan picks, bit
    /// for bit, the first centre on ties included.
    #[test]
    fn assigning_by_columns_matches_the_row_scan() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for d in [1, 2, 3, 16] {
            let n = 301;
            // Coarse values, so that exact ties between centres occur.
            let x: Vec<f64> = (0..n * d).map(|_| f64::from(rng.gen_range(-3i32..4)) * 0.5).collect();
            let mut centres: Vec<f64> = (0..7 * d).map(|_| f64::from(rng.gen_range(-3i32..4)) * 0.5).collect();
            centres.extend_from_within(..d); // a duplicate centre: always a tie
            let columns: Vec<f64> = (0..d).flat_map(|j| x.iter().skip(j).step_by(d).copied()).collect();
            let (mut best, mut dist) = (vec![0; n], vec![0.0; n]);
            assign_nearest(&columns, n, &centres, &mut best, &mut dist);
            for (i, row) in x.chunks(d).enumerate() {
                let (c, v) = nearest(row, &centres, d);
                assert_eq!((best[i], dist[i].to_bits()), (c, v.to_bits()), "d {d}, row {i}");
            }
        }
    }

    #[test]
    fn fit_rejects_too_few_points_and_nan() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert!(DiagonalGmm::fit(&[0.0; 6], 2, 10, 10, &mut rng).is_err());
        assert!(DiagonalGmm::fit(&[f32::NAN; 40], 2, 2, 10, &mut rng).is_err());
    }

    #[test]
    fn validate_rejects_malformed_mixtures() {
        let good = DiagonalGmm { dim: 1, weights: vec![1.0], means: vec![0.0], variances: vec![1.0] };
        assert!(LatentPrior::Gmm(good.clone()).validate().is_ok());
        let bad_var = DiagonalGmm { variances: vec![-1.0], ..good.clone() };
        assert!(LatentPrior::Gmm(bad_var).validate().is_err());
        let bad_len = DiagonalGmm { means: vec![0.0, 1.0], ..good.clone() };
        assert!(LatentPrior::Gmm(bad_len).validate().is_err());
        let bad_weights = DiagonalGmm { weights: vec![0.5], ..good };
        assert!(LatentPrior::Gmm(bad_weights).validate().is_err());
    }
}
