//! The outlier analysis of LCD-VAE's claim that private training "maps sensitive outliers to
//! typical data points": for each outlier x (a cross-domain image hidden at client 0) and its
//! reconstruction r, compare ‖r − x‖ with the distance from r to the nearest in-domain training
//! image; an outlier is *mapped to typical data* when its reconstruction lies closer to an
//! in-domain image than to the outlier itself.

use serde::{Deserialize, Serialize};
use tensor_kernels::{Backend, GemmShape, Transpose};

use crate::MetricsError;

/// Reference images compared per GEMM block (bounds memory at block × outliers floats).
const BLOCK: usize = 4096;

/// Distances of reconstructions of the outliers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutlierStats {
    /// Outliers analysed.
    pub count: usize,
    /// Mean ‖r − x‖ (Euclidean, pixels in [0, 1]).
    pub mean_distance_to_outlier: f64,
    /// Mean distance from r to its nearest in-domain training image.
    pub mean_distance_to_nearest_typical: f64,
    /// Fraction of outliers whose reconstruction is closer to an in-domain image than to itself.
    pub fraction_mapped_to_typical: f64,
}

/// Squared distance from each row of `queries` (n × dim) to its nearest row of `references`
/// (m × dim), as ‖q‖² + ‖r‖² − 2 q·r with the cross terms from GEMMs on `backend`.
pub fn nearest_squared_distances<B: Backend>(backend: &B, queries: &[f32], references: &[f32], dim: usize) -> Vec<f64> {
    let n = queries.len() / dim;
    let q_norms: Vec<f64> = queries.chunks(dim).map(|r| r.iter().map(|&v| f64::from(v) * f64::from(v)).sum()).collect();
    let q = backend.upload(queries);
    let mut best = vec![f64::INFINITY; n];
    for block in references.chunks(BLOCK * dim) {
        let m = block.len() / dim;
        let r_norms: Vec<f64> =
            block.chunks(dim).map(|r| r.iter().map(|&v| f64::from(v) * f64::from(v)).sum()).collect();
        let r = backend.upload(block);
        let mut cross = backend.zeros(n * m);
        backend.gemm(GemmShape::new(n, m, dim).transposed(Transpose::No, Transpose::Yes), &q, &r, &mut cross, 1.0, 0.0);
        let mut host = vec![0.0f32; n * m];
        backend.read(&cross, &mut host);
        for (i, row) in host.chunks(m).enumerate() {
            for (j, &c) in row.iter().enumerate() {
                let d = (q_norms[i] + r_norms[j] - 2.0 * f64::from(c)).max(0.0);
                best[i] = best[i].min(d);
            }
        }
    }
    best
}

/// Statistics of `reconstructions` of `outliers` (both n × dim) against the in-domain images,
/// given as several slices of rows (m × dim each, e.g. one per client).
pub fn outlier_stats<B: Backend>(
    backend: &B,
    outliers: &[f32],
    reconstructions: &[f32],
    references: &[&[f32]],
    dim: usize,
) -> Result<OutlierStats, MetricsError> {
    let total: usize = references.iter().map(|r| r.len()).sum();
    if outliers.len() != reconstructions.len() || outliers.is_empty() || total == 0 || dim == 0 {
        return Err(MetricsError::Shape(format!(
            "{} outlier values, {} reconstruction values and {total} reference values of dimension {dim}",
            outliers.len(),
            reconstructions.len(),
        )));
    }
    let n = outliers.len() / dim;
    let mut nearest = vec![f64::INFINITY; n];
    for part in references.iter().filter(|r| !r.is_empty()) {
        let d = nearest_squared_distances(backend, reconstructions, part, dim);
        nearest.iter_mut().zip(d).for_each(|(b, v)| *b = b.min(v));
    }
    let (mut to_self, mut to_typical, mut mapped) = (0.0, 0.0, 0usize);
    for ((x, r), near) in outliers.chunks(dim).zip(reconstructions.chunks(dim)).zip(&nearest) {
        let d_self: f64 = x.iter().zip(r).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>();
        to_self += d_self.sqrt();
        to_typical += near.sqrt();
        mapped += usize::from(*near < d_self);
    }
    Ok(OutlierStats {
        count: n,
        mean_distance_to_outlier: to_self / n as f64,
        mean_distance_to_nearest_typical: to_typical / n as f64,
        fraction_mapped_to_typical: mapped as f64 / n as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor_kernels::Cpu;

    #[test]
    fn nearest_distances_match_brute_force() {
        let refs: Vec<f32> = (0..5000 * 3).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
        let queries = vec![0.1, 0.2, 0.3, 0.9, 0.0, 0.5];
        let got = nearest_squared_distances(&Cpu::new(), &queries, &refs, 3);
        for (k, q) in queries.chunks(3).enumerate() {
            let want = refs
                .chunks(3)
                .map(|r| r.iter().zip(q).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>())
                .fold(f64::INFINITY, f64::min);
            assert!((got[k] - want).abs() < 1e-5, "query {k}: {} vs {want}", got[k]);
        }
    }

    #[test]
    fn a_reconstruction_that_looks_typical_counts_as_mapped() {
        let typical = [1.0, 1.0, 0.0, 0.0];
        let outliers = vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0];
        // First reconstruction copies the outlier; the second looks like the typical image.
        let recon = vec![0.0, 0.0, 1.0, 1.0, 0.9, 1.0, 0.1, 0.0];
        let s = outlier_stats(&Cpu::new(), &outliers, &recon, &[&typical[..]], 4).unwrap();
        assert_eq!(s.count, 2);
        assert_eq!(s.fraction_mapped_to_typical, 0.5);
        assert!((s.mean_distance_to_outlier - (0.0 + (0.81f64 + 1.0 + 0.81 + 1.0).sqrt()) / 2.0).abs() < 1e-6);
    }
}
