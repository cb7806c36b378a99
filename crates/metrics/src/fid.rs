//! The Fréchet Inception Distance (Heusel et al. 2017) between two sets of features:
//! FID = ‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr √(Σ₁Σ₂), all in f64. Tr √(Σ₁Σ₂) is computed as
//! Σᵢ √λᵢ over the eigenvalues of the symmetric positive semi-definite √Σ₁ Σ₂ √Σ₁, which has the
//! same spectrum as Σ₁Σ₂; this avoids the non-symmetric matrix square root (and the complex
//! round-off) of `scipy.linalg.sqrtm`. Eigenvalues below zero are round-off and count as zero.

use faer::{Mat, Side};
use safetensors::tensor::{Dtype, TensorView};

use crate::MetricsError;

/// Mean and covariance of a set of feature vectors.
#[derive(Clone, Debug)]
pub struct FeatureStats {
    /// Number of feature vectors.
    pub n: usize,
    /// Mean (dim).
    pub mean: Vec<f64>,
    /// Unbiased covariance (dim × dim).
    cov: Mat<f64>,
}

impl FeatureStats {
    /// Statistics of `features` (n × dim, row-major). Errors for fewer than two vectors or a
    /// non-finite value.
    pub fn from_features(features: &[f32], n: usize, dim: usize) -> Result<Self, MetricsError> {
        if n < 2 {
            return Err(MetricsError::Shape(format!("FID needs at least 2 images per set, got {n}")));
        }
        if dim == 0 || features.len() != n * dim {
            return Err(MetricsError::Shape(format!("{} feature values for {n} × {dim}", features.len())));
        }
        if let Some(i) = features.iter().position(|v| !v.is_finite()) {
            return Err(MetricsError::NonFinite(format!(
                "feature {} of image {} is {}",
                i % dim,
                i / dim,
                features[i]
            )));
        }
        let mut mean = vec![0.0f64; dim];
        for row in features.chunks(dim) {
            mean.iter_mut().zip(row).for_each(|(m, &v)| *m += f64::from(v));
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let centred = Mat::from_fn(n, dim, |i, j| f64::from(features[i * dim + j]) - mean[j]);
        let cov = (centred.transpose() * &centred) * faer::Scale(1.0 / (n - 1) as f64);
        Ok(FeatureStats { n, mean, cov })
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Whether the covariance is necessarily singular (n ≤ dim): FID is still defined but
    /// biased, and not comparable with values from 2048 or more images.
    pub fn rank_deficient(&self) -> bool {
        self.n <= self.dim()
    }
}

/// Statistics as the bytes of a safetensors file: for each (name, stats), f64 tensors
/// `{name}_mu` \[dim\] and `{name}_sigma` [dim, dim] (the layout pytorch-fid's saved statistics
/// use, as mu / sigma).
pub fn encode_feature_stats(sets: &[(&str, &FeatureStats)]) -> Vec<u8> {
    let bytes = |v: &mut dyn Iterator<Item = f64>| v.flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut buffers = Vec::new();
    for (name, s) in sets {
        let d = s.dim();
        buffers.push((format!("{name}_mu"), vec![d], bytes(&mut s.mean.iter().copied())));
        buffers.push((format!("{name}_sigma"), vec![d, d], bytes(&mut (0..d * d).map(|k| s.cov[(k / d, k % d)]))));
    }
    // Each buffer holds exactly its shape's f64 values, which is all a view or the encoder checks.
    let views = buffers
        .iter()
        .map(|(name, shape, data)| {
            (name.clone(), TensorView::new(Dtype::F64, shape.clone(), data).expect("a buffer matches its shape"))
        })
        .collect::<Vec<_>>();
    safetensors::serialize(views, &None).expect("matching views serialise")
}

/// Eigenvalues of a symmetric matrix (its lower triangle is read).
fn symmetric_eigenvalues(m: &Mat<f64>) -> Result<Vec<f64>, MetricsError> {
    m.self_adjoint_eigenvalues(Side::Lower)
        .map_err(|e| MetricsError::NonFinite(format!("eigenvalues did not converge: {e:?}")))
}

/// Tr √(Σ₁Σ₂) = Σᵢ √λᵢ(√Σ₁ Σ₂ √Σ₁).
fn trace_sqrt_product(a: &Mat<f64>, b: &Mat<f64>) -> Result<f64, MetricsError> {
    let eigen = a
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| MetricsError::NonFinite(format!("eigendecomposition did not converge: {e:?}")))?;
    let (u, s) = (eigen.U(), eigen.S().column_vector());
    let roots = Mat::from_fn(a.nrows(), a.ncols(), |i, j| u[(i, j)] * s[j].max(0.0).sqrt());
    let sqrt_a = &roots * u.transpose();
    let m = &sqrt_a * b * &sqrt_a;
    let symmetric = Mat::from_fn(m.nrows(), m.ncols(), |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));
    Ok(symmetric_eigenvalues(&symmetric)?.iter().map(|&l| l.max(0.0).sqrt()).sum())
}

/// FID between two feature sets of the same dimension.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64, MetricsError> {
    if a.dim() != b.dim() {
        return Err(MetricsError::Shape(format!("feature dimensions differ: {} vs {}", a.dim(), b.dim())));
    }
    let mean_term: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y) * (x - y)).sum();
    let trace = |m: &Mat<f64>| (0..m.nrows()).map(|i| m[(i, i)]).sum::<f64>();
    let value = mean_term + trace(&a.cov) + trace(&b.cov) - 2.0 * trace_sqrt_product(&a.cov, &b.cov)?;
    // Round-off can leave a tiny negative value for (nearly) identical sets.
    Ok(value.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, StandardNormal};

    fn gaussian(n: usize, dim: usize, scales: &[f64], shift: f64, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n * dim)
            .map(|i| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (z * scales[i % dim] + shift) as f32
            })
            .collect()
    }

    #[test]
    fn identical_sets_give_zero() {
        let f = gaussian(300, 40, &[1.0; 40], 0.5, 1);
        let s = FeatureStats::from_features(&f, 300, 40).unwrap();
        let fid = frechet_distance(&s, &s).unwrap();
        assert!(fid.abs() < 1e-6, "FID of a set with itself: {fid}");
        // Rank-deficient (n < dim) too.
        let g = gaussian(10, 40, &[1.0; 40], 0.0, 2);
        let s = FeatureStats::from_features(&g, 10, 40).unwrap();
        assert!(s.rank_deficient());
        assert!(frechet_distance(&s, &s).unwrap() < 1e-6);
    }

    #[test]
    fn matches_the_closed_form_for_diagonal_covariances_under_any_rotation() {
        // With diagonal Σ₁ = diag(a), Σ₂ = diag(b): FID = ‖μ₁ − μ₂‖² + Σ (aᵢ + bᵢ − 2√(aᵢbᵢ)).
        // Rotating both sets by one orthogonal Q keeps FID but makes the covariances dense, so
        // this checks the eigenvalue route against the closed form.
        let dim = 6;
        let (sa, sb) = ([1.0, 2.0, 0.5, 3.0, 1.5, 0.2], [0.7, 2.5, 1.0, 1.0, 0.3, 0.9]);
        let (fa, fb) = (gaussian(4000, dim, &sa, 0.0, 3), gaussian(4000, dim, &sb, 0.3, 4));
        let (a, b) = (
            FeatureStats::from_features(&fa, 4000, dim).unwrap(),
            FeatureStats::from_features(&fb, 4000, dim).unwrap(),
        );
        let mut want: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y).powi(2)).sum();
        // The sample covariances are not exactly diagonal: use the closed form only as far as
        // the samples allow, via their diagonals, and compare loosely; the rotation check is exact.
        for i in 0..dim {
            let (x, y) = (a.cov[(i, i)], b.cov[(i, i)]);
            want += x + y - 2.0 * (x * y).sqrt();
        }
        let fid = frechet_distance(&a, &b).unwrap();
        assert!((fid - want).abs() < 0.02 * want, "FID {fid} vs diagonal closed form {want}");
        // A random rotation (QR of a Gaussian matrix by Gram–Schmidt).
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut q: Vec<Vec<f64>> = (0..dim).map(|_| (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect()).collect();
        for i in 0..dim {
            for j in 0..i {
                let d: f64 = (0..dim).map(|k| q[i][k] * q[j][k]).sum();
                let qj = q[j].clone();
                q[i].iter_mut().zip(&qj).for_each(|(x, y)| *x -= d * y);
            }
            let norm = q[i].iter().map(|x| x * x).sum::<f64>().sqrt();
            q[i].iter_mut().for_each(|x| *x /= norm);
        }
        let rotate = |f: &[f32]| -> Vec<f32> {
            f.chunks(dim)
                .flat_map(|row| {
                    (0..dim)
                        .map(|i| (0..dim).map(|k| q[i][k] * f64::from(row[k])).sum::<f64>() as f32)
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let (ra, rb) = (rotate(&fa), rotate(&fb));
        let rotated = frechet_distance(
            &FeatureStats::from_features(&ra, 4000, dim).unwrap(),
            &FeatureStats::from_features(&rb, 4000, dim).unwrap(),
        )
        .unwrap();
        assert!((rotated - fid).abs() < 1e-4 * fid, "rotation changed FID: {rotated} vs {fid}");
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(FeatureStats::from_features(&[1.0, 2.0], 1, 2).is_err());
        assert!(FeatureStats::from_features(&[1.0, f32::NAN, 0.0, 1.0], 2, 2).is_err());
        assert!(FeatureStats::from_features(&[1.0, 2.0, 3.0], 2, 2).is_err());
        let a = FeatureStats::from_features(&[0.0, 1.0, 2.0, 3.0], 2, 2).unwrap();
        let b = FeatureStats::from_features(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 2, 3).unwrap();
        assert!(frechet_distance(&a, &b).is_err());
    }
}
