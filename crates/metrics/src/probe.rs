//! The linear probe of DESIGN.md §4: multinomial logistic regression with an L2 penalty at
//! C = 1 (sklearn's `LogisticRegression()` objective: C·Σᵢ CEᵢ + ½‖W‖², intercept unpenalised),
//! solved to convergence with L-BFGS (Nocedal & Wright 2006, Alg. 7.4) in f64, on a stratified
//! 80/20 split with a fixed seed; reports accuracy and support-weighted F1.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::MetricsError;

/// Fraction of samples held out for testing.
const TEST_FRACTION: f64 = 0.2;
/// L2 regularisation strength (sklearn's default C).
const C: f64 = 1.0;
/// L-BFGS history length.
const HISTORY: usize = 10;
/// Convergence: max |gradient| below this (sklearn's lbfgs `tol` is 1e-4 on the same quantity).
const GRADIENT_TOLERANCE: f64 = 1e-6;
/// Iteration cap; well above what 2-D features need.
const MAX_ITERATIONS: usize = 5000;

/// Accuracy and weighted F1 on the held-out 20 %.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ProbeScore {
    /// Fraction of held-out samples classified correctly.
    pub accuracy: f64,
    /// Per-class F1 weighted by held-out support.
    pub f1: f64,
    /// Held-out samples.
    pub test_samples: usize,
    /// L-BFGS iterations used.
    pub iterations: usize,
}

/// Stratified split: per class, a seeded shuffle, then the class's share of ⌈0.2·n⌉ test samples
/// (largest-remainder allocation). Returns (train, test) indices.
pub fn stratified_split(labels: &[u8], seed: u64) -> (Vec<usize>, Vec<usize>) {
    let n = labels.len();
    let n_test = (TEST_FRACTION * n as f64).ceil() as usize;
    let mut classes: Vec<u8> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let members: Vec<Vec<usize>> = classes.iter().map(|&c| (0..n).filter(|&i| labels[i] == c).collect()).collect();
    let exact: Vec<f64> = members.iter().map(|m| m.len() as f64 * n_test as f64 / n as f64).collect();
    let mut take: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..classes.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    let mut missing = n_test - take.iter().sum::<usize>();
    for &c in order.iter().cycle().take(order.len() * 2) {
        if missing == 0 {
            break;
        }
        if take[c] < members[c].len() {
            take[c] += 1;
            missing -= 1;
        }
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (m, t) in members.into_iter().zip(take) {
        let mut m = m;
        m.shuffle(&mut rng);
        test.extend_from_slice(&m[..t]);
        train.extend_from_slice(&m[t..]);
    }
    (train, test)
}

/// Multinomial logistic regression fitted by L-BFGS.
struct Softmax {
    classes: Vec<u8>,
    dim: usize,
    /// K × (dim + 1): weights then intercept per class.
    params: Vec<f64>,
}

impl Softmax {
    /// Objective C·Σ CE + ½‖W‖² and its gradient.
    fn objective(params: &[f64], x: &[f64], y: &[usize], dim: usize, k: usize, grad: &mut [f64]) -> f64 {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let stride = dim + 1;
        let mut loss = 0.0;
        let mut logits = vec![0.0; k];
        for (row, &label) in x.chunks(dim).zip(y) {
            for c in 0..k {
                let w = &params[c * stride..(c + 1) * stride];
                logits[c] = w[dim] + row.iter().zip(w).map(|(a, b)| a * b).sum::<f64>();
            }
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
            loss += C * (lse - logits[label]);
            for c in 0..k {
                let p = (logits[c] - lse).exp() - if c == label { 1.0 } else { 0.0 };
                let g = &mut grad[c * stride..(c + 1) * stride];
                row.iter().enumerate().for_each(|(j, v)| g[j] += C * p * v);
                g[dim] += C * p;
            }
        }
        for c in 0..k {
            for j in 0..dim {
                let w = params[c * stride + j];
                loss += 0.5 * w * w;
                grad[c * stride + j] += w;
            }
        }
        loss
    }

    fn fit(x: &[f64], labels: &[u8], dim: usize) -> (Self, usize) {
        let mut classes: Vec<u8> = labels.to_vec();
        classes.sort_unstable();
        classes.dedup();
        let k = classes.len();
        let y: Vec<usize> = labels.iter().map(|l| classes.binary_search(l).expect("known class")).collect();
        let n_params = k * (dim + 1);
        let f = |p: &[f64], g: &mut [f64]| Self::objective(p, x, &y, dim, k, g);
        let (params, iterations) = lbfgs(vec![0.0; n_params], f);
        (Softmax { classes, dim, params }, iterations)
    }

    fn predict(&self, row: &[f64]) -> u8 {
        let stride = self.dim + 1;
        let score = |c: usize| {
            let w = &self.params[c * stride..(c + 1) * stride];
            w[self.dim] + row.iter().zip(w).map(|(a, b)| a * b).sum::<f64>()
        };
        let best = (0..self.classes.len()).max_by(|&a, &b| score(a).total_cmp(&score(b))).expect("a class");
        self.classes[best]
    }
}

/// Minimises `f` (which writes its gradient) from `x0` with L-BFGS and a backtracking Armijo line
/// search; returns the minimiser and the iterations used.
fn lbfgs(mut x: Vec<f64>, mut f: impl FnMut(&[f64], &mut [f64]) -> f64) -> (Vec<f64>, usize) {
    let n = x.len();
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let mut new_g = vec![0.0; n];
    for it in 0..MAX_ITERATIONS {
        if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < GRADIENT_TOLERANCE {
            return (x, it);
        }
        // Two-loop recursion: d = −H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(s_hist.len());
        for (s, y) in s_hist.iter().zip(&y_hist).rev() {
            let a = dot(s, &q) / dot(y, s);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        if let (Some(s), Some(y)) = (s_hist.last(), y_hist.last()) {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|v| *v *= gamma);
        } else {
            let norm = dot(&g, &g).sqrt().max(1.0);
            q.iter_mut().for_each(|v| *v /= norm);
        }
        for ((s, y), a) in s_hist.iter().zip(&y_hist).zip(alphas.into_iter().rev()) {
            let b = dot(y, &q) / dot(y, s);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let mut d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            // Not a descent direction: restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            d = g.iter().map(|v| -v).collect();
            slope = dot(&g, &d);
        }
        let mut step = 1.0;
        let mut new_x;
        let mut new_f;
        loop {
            new_x = x.iter().zip(&d).map(|(xi, di)| xi + step * di).collect::<Vec<_>>();
            new_f = f(&new_x, &mut new_g);
            if new_f <= fx + 1e-4 * step * slope || step < 1e-20 {
                break;
            }
            step *= 0.5;
        }
        let s: Vec<f64> = new_x.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = new_g.iter().zip(&g).map(|(a, b)| a - b).collect();
        let converged = (fx - new_f).abs() <= 1e-14 * fx.abs().max(1.0);
        if dot(&s, &y) > 1e-12 {
            s_hist.push(s);
            y_hist.push(y);
            if s_hist.len() > HISTORY {
                s_hist.remove(0);
                y_hist.remove(0);
            }
        }
        x = new_x;
        fx = new_f;
        std::mem::swap(&mut g, &mut new_g);
        if converged {
            return (x, it + 1);
        }
    }
    (x, MAX_ITERATIONS)
}

/// Support-weighted F1 over the classes present in `truth` (sklearn's `average="weighted"`).
pub fn weighted_f1(truth: &[u8], predicted: &[u8]) -> f64 {
    let mut classes: Vec<u8> = truth.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let n = truth.len() as f64;
    classes
        .iter()
        .map(|&c| {
            let tp = truth.iter().zip(predicted).filter(|(t, p)| **t == c && **p == c).count() as f64;
            let fp = truth.iter().zip(predicted).filter(|(t, p)| **t != c && **p == c).count() as f64;
            let fn_ = truth.iter().zip(predicted).filter(|(t, p)| **t == c && **p != c).count() as f64;
            let support = tp + fn_;
            let f1 = if tp == 0.0 { 0.0 } else { 2.0 * tp / (2.0 * tp + fp + fn_) };
            f1 * support / n
        })
        .sum()
}

/// Fits the probe on 80 % of (`features`, `labels`) and scores it on the other 20 %.
pub fn linear_probe(features: &[f32], dim: usize, labels: &[u8], seed: u64) -> Result<ProbeScore, MetricsError> {
    if dim == 0 || features.len() != labels.len() * dim {
        return Err(MetricsError::Shape(format!(
            "{} feature values do not match {} labels of dimension {dim}",
            features.len(),
            labels.len()
        )));
    }
    if labels.len() < 10 {
        return Err(MetricsError::Shape(format!("{} samples are too few for an 80/20 probe", labels.len())));
    }
    if let Some(i) = features.iter().position(|v| !v.is_finite()) {
        return Err(MetricsError::NonFinite(format!("feature {} of sample {} is {}", i % dim, i / dim, features[i])));
    }
    let (train, test) = stratified_split(labels, seed);
    let gather = |idx: &[usize]| -> (Vec<f64>, Vec<u8>) {
        let x = idx.iter().flat_map(|&i| features[i * dim..(i + 1) * dim].iter().map(|&v| f64::from(v))).collect();
        (x, idx.iter().map(|&i| labels[i]).collect())
    };
    let (x_train, y_train) = gather(&train);
    let (x_test, y_test) = gather(&test);
    let (model, iterations) = Softmax::fit(&x_train, &y_train, dim);
    let predicted: Vec<u8> = x_test.chunks(dim).map(|row| model.predict(row)).collect();
    let correct = predicted.iter().zip(&y_test).filter(|(p, t)| p == t).count();
    Ok(ProbeScore {
        accuracy: correct as f64 / y_test.len() as f64,
        f1: weighted_f1(&y_test, &predicted),
        test_samples: y_test.len(),
        iterations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn split_is_stratified_and_sized_like_the_paper() {
        let labels: Vec<u8> = (0..2000).map(|i| (i % 10) as u8).collect();
        let (train, test) = stratified_split(&labels, 0);
        assert_eq!((train.len(), test.len()), (1600, 400));
        for c in 0..10u8 {
            assert_eq!(test.iter().filter(|&&i| labels[i] == c).count(), 40);
        }
        let mut all: Vec<usize> = train.iter().chain(&test).cloned().collect();
        all.sort();
        assert_eq!(all, (0..2000).collect::<Vec<_>>());
    }

    #[test]
    fn probe_separates_separable_clusters() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut features = Vec::new();
        let mut labels = Vec::new();
        for i in 0..1000 {
            let c = (i % 10) as u8;
            let angle = f32::from(c) * std::f32::consts::TAU / 10.0;
            features.push(5.0 * angle.cos() + rng.gen_range(-0.3..0.3));
            features.push(5.0 * angle.sin() + rng.gen_range(-0.3..0.3));
            labels.push(c);
        }
        let s = linear_probe(&features, 2, &labels, 0).unwrap();
        assert_eq!(s.accuracy, 1.0);
        assert!((s.f1 - 1.0).abs() < 1e-12);
        assert_eq!(s.test_samples, 200);
    }

    #[test]
    fn probe_on_noise_is_near_chance() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let features: Vec<f32> = (0..4000).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let labels: Vec<u8> = (0..2000).map(|i| (i % 10) as u8).collect();
        let s = linear_probe(&features, 2, &labels, 0).unwrap();
        assert!(s.accuracy < 0.2, "{s:?}");
    }

    #[test]
    fn lbfgs_reaches_the_regularised_optimum() {
        // Two points, one feature: the optimum has zero gradient; check it directly.
        let x = vec![1.0, -1.0, 2.0, -2.0];
        let labels = vec![0u8, 1, 0, 1];
        let (model, _) = Softmax::fit(&x, &labels, 1);
        let y = vec![0usize, 1, 0, 1];
        let mut g = vec![0.0; 4];
        Softmax::objective(&model.params, &x, &y, 1, 2, &mut g);
        assert!(g.iter().all(|v| v.abs() < 1e-5), "{g:?}");
    }

    #[test]
    fn weighted_f1_matches_hand_computation() {
        // Class 0: tp 1, fp 1, fn 1 → F1 0.5, support 2. Class 1: tp 1, fp 1, fn 1 → 0.5, support 2.
        // Class 2: tp 0, fp 0, fn 0 (absent), class 3 predicted only → not counted.
        let t = [0, 0, 1, 1, 4];
        let p = [0, 1, 1, 0, 4];
        assert!((weighted_f1(&t, &p) - (0.5 * 2.0 + 0.5 * 2.0 + 1.0) / 5.0).abs() < 1e-12);
    }

    #[test]
    fn rejects_bad_features() {
        assert!(linear_probe(&[0.0; 5], 2, &[0; 3], 0).is_err());
        let mut f = vec![0.0f32; 40];
        f[7] = f32::NAN;
        let e = linear_probe(&f, 2, &[0; 20], 0).unwrap_err().to_string();
        assert!(e.contains("sample 3"), "{e}");
    }
}
