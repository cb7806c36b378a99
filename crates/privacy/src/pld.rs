//! Privacy-loss-distribution accounting (Meiser & Mohammadi 2018; Koskela, Jälkö, Honkela 2020)
//! with the "connect the dots" discretisation (Doroshenko, Ghazi, Kamath, Kumar, Manurangsi
//! 2022): the privacy loss of one Poisson-subsampled Gaussian step is replaced by the discrete
//! distribution on a grid of width Δ whose hockey-stick curve δ(ε) interpolates the exact one
//! linearly in e^ε between grid points. δ is convex in e^ε, so the chords lie above it: the
//! discrete distribution dominates the true one (ε is an upper bound) without the drift that
//! rounding every loss up would add at each of thousands of compositions. Compositions are
//! convolutions by FFT with repeated squaring, and ε(δ) is read off
//! δ(ε) = Σ_y p(y)·max(0, 1 − e^(ε − y)) + p(∞).
//! Both directions of add-or-remove adjacency are tracked; ε is the larger of the two.

use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

use crate::{check_delta, Accountant, DpEvent, Epsilon, PrivacyError};

/// Grid width of the discretised privacy loss (dp_accounting's default).
pub const DEFAULT_INTERVAL: f64 = 1e-4;
/// Probability mass allowed to be moved pessimistically at each tail per truncation.
const TAIL_MASS: f64 = 1e-15;
/// Standard-normal quantile beyond which the Gaussian tail is below [`TAIL_MASS`]-ish (Φc(8.3) ≈ 5e-17).
const TAIL_Z: f64 = 8.3;
/// Most points a discretised PLD may hold: 2²⁰ f64 values (8 MB), FFT buffers of 32 MB.
const MAX_POINTS: usize = 1 << 20;
/// The coarsest grid width tried (the grid widens by 4× while it is too large to hold).
const MAX_INTERVAL: f64 = 0.0256;

/// Φ(z), the standard normal CDF.
fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

/// A discretised privacy-loss distribution: mass `pmf[k]` at loss (lower + k)·Δ, plus mass at +∞.
#[derive(Clone, Debug)]
struct DiscretePld {
    interval: f64,
    lower: i64,
    pmf: Vec<f64>,
    infinity: f64,
}

impl DiscretePld {
    /// The identity of composition: all mass at loss 0.
    fn identity(interval: f64) -> Self {
        DiscretePld { interval, lower: 0, pmf: vec![1.0], infinity: 0.0 }
    }

    /// The connect-the-dots distribution for an exact hockey-stick curve `delta(ε)` on the grid
    /// points from `y_lo` (at or below the loss's essential infimum, where δ(ε) = 1 − e^ε) to
    /// `y_hi` (whose δ becomes the mass at +∞). With tᵢ = e^(εᵢ), chord slopes
    /// cᵢ = (δᵢ − δᵢ₋₁)/(tᵢ − tᵢ₋₁), c₀ = −1 and c_(n+1) = 0, the mass at εᵢ is e^(εᵢ)(cᵢ₊₁ − cᵢ).
    fn connect_the_dots(interval: f64, y_lo: f64, y_hi: f64, delta: impl Fn(f64) -> f64) -> Result<Self, PrivacyError> {
        let lower = (y_lo / interval).floor() as i64;
        let upper = ((y_hi / interval).ceil() as i64).max(lower + 1);
        check_points((upper - lower + 1) as usize, interval)?;
        let eps: Vec<f64> = (lower..=upper).map(|k| k as f64 * interval).collect();
        let deltas: Vec<f64> = eps.iter().map(|&e| delta(e).clamp(0.0, 1.0)).collect();
        let n = eps.len();
        let mut slopes = vec![-1.0; n + 1]; // slopes[i] = cᵢ; slopes[n] = c_(n+1) = 0.
        for i in 1..n {
            let dt = eps[i].exp() - eps[i - 1].exp();
            slopes[i] = (deltas[i] - deltas[i - 1]) / dt;
        }
        slopes[n] = 0.0;
        let pmf = (0..n).map(|i| (eps[i].exp() * (slopes[i + 1] - slopes[i])).max(0.0)).collect();
        Ok(DiscretePld { interval, lower, pmf, infinity: deltas[n - 1] })
    }

    /// Moves at most [`TAIL_MASS`] from each end: the left tail onto the first kept bucket
    /// (a larger loss: pessimistic), the right tail to +∞.
    fn truncate(&mut self) {
        let mut left = 0;
        let mut acc = 0.0;
        while left + 1 < self.pmf.len() && acc + self.pmf[left] < TAIL_MASS {
            acc += self.pmf[left];
            left += 1;
        }
        let mut right = self.pmf.len();
        let mut acc_r = 0.0;
        while right > left + 1 && acc_r + self.pmf[right - 1] < TAIL_MASS {
            acc_r += self.pmf[right - 1];
            right -= 1;
        }
        self.infinity += acc_r;
        self.pmf.truncate(right);
        self.pmf.drain(..left);
        self.pmf[0] += acc;
        self.lower += left as i64;
    }

    /// The distribution of the sum of independent losses from `self` and `other`.
    fn compose(&self, other: &Self, planner: &mut FftPlanner<f64>) -> Result<Self, PrivacyError> {
        let n = self.pmf.len() + other.pmf.len() - 1;
        check_points(n, self.interval)?;
        let size = n.next_power_of_two();
        let fft = planner.plan_fft_forward(size);
        let ifft = planner.plan_fft_inverse(size);
        let spectrum = |pmf: &[f64]| {
            let mut buf: Vec<Complex<f64>> = pmf.iter().map(|&p| Complex::new(p, 0.0)).collect();
            buf.resize(size, Complex::new(0.0, 0.0));
            fft.process(&mut buf);
            buf
        };
        let mut a = spectrum(&self.pmf);
        let b = spectrum(&other.pmf);
        a.iter_mut().zip(&b).for_each(|(x, y)| *x *= y);
        ifft.process(&mut a);
        let pmf = a[..n].iter().map(|c| (c.re / size as f64).max(0.0)).collect();
        let mut out = DiscretePld {
            interval: self.interval,
            lower: self.lower + other.lower,
            pmf,
            infinity: 1.0 - (1.0 - self.infinity) * (1.0 - other.infinity),
        };
        out.truncate();
        Ok(out)
    }

    /// `self` composed with itself `times` times (repeated squaring).
    fn self_compose(&self, times: u64, planner: &mut FftPlanner<f64>) -> Result<Self, PrivacyError> {
        let mut result = DiscretePld::identity(self.interval);
        let mut base = self.clone();
        let mut t = times;
        while t > 0 {
            if t & 1 == 1 {
                result = result.compose(&base, planner)?;
            }
            t >>= 1;
            if t > 0 {
                base = base.compose(&base, planner)?;
            }
        }
        Ok(result)
    }

    /// δ(ε) = Σ p(y)·max(0, 1 − e^(ε − y)) + p(∞).
    fn delta(&self, epsilon: f64) -> f64 {
        let mut sum = 0.0;
        for (k, &p) in self.pmf.iter().enumerate().rev() {
            let y = (self.lower + k as i64) as f64 * self.interval;
            if y <= epsilon {
                break;
            }
            sum += p * -(epsilon - y).exp_m1();
        }
        sum + self.infinity
    }

    /// The smallest ε ≥ 0 with δ(ε) ≤ δ (bisection; δ(ε) is non-increasing); an error when the
    /// mass at +∞ alone exceeds δ.
    fn epsilon(&self, delta: f64) -> Result<f64, PrivacyError> {
        if self.infinity > delta {
            return Err(PrivacyError::DeltaBelowResolution { delta, mass: self.infinity });
        }
        if self.delta(0.0) <= delta {
            return Ok(0.0);
        }
        let mut hi = (self.lower + self.pmf.len() as i64) as f64 * self.interval;
        let mut lo = 0.0;
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if self.delta(mid) <= delta {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(hi)
    }
}

/// Refuses a grid of `points` values beyond [`MAX_POINTS`].
fn check_points(points: usize, interval: f64) -> Result<(), PrivacyError> {
    if points > MAX_POINTS {
        return Err(PrivacyError::GridTooLarge { points: MAX_POINTS, interval });
    }
    Ok(())
}

/// The two one-step PLDs (remove, add) of a Poisson-subsampled Gaussian with rate q and noise σ
/// (sensitivity 1), from their exact hockey-stick curves. With P = (1 − q)N(0, σ²) + qN(1, σ²),
/// Q = N(0, σ²) and L(x) = ln(P(x)/Q(x)) = ln(1 − q + q·e^((2x − 1)/(2σ²))) (increasing):
/// remove: δ(ε) = P(x > L⁻¹(ε)) − e^ε Q(x > L⁻¹(ε));
/// add (roles swapped, loss −L): δ(ε) = Q(x < L⁻¹(−ε)) − e^ε P(x < L⁻¹(−ε)).
fn subsampled_gaussian(q: f64, sigma: f64, interval: f64) -> Result<(DiscretePld, DiscretePld), PrivacyError> {
    let s2 = sigma * sigma;
    let loss = |x: f64| {
        let t = (2.0 * x - 1.0) / (2.0 * s2);
        if q == 1.0 {
            t
        } else {
            // ln(1 − q + q e^t), stable for large t.
            let a = (-q).ln_1p();
            let b = q.ln() + t;
            a.max(b) + (-(a - b).abs()).exp().ln_1p()
        }
    };
    // The x with L(x) = y, or None when y is at or below the infimum ln(1 − q).
    let inverse = |y: f64| -> Option<f64> {
        let inner = if q == 1.0 {
            y
        } else {
            let v = y.exp_m1() + q; // e^y − (1 − q)
            if v <= 0.0 {
                return None;
            }
            (v / q).ln()
        };
        Some(s2 * inner + 0.5)
    };
    let upper_tail = |z: f64| normal_cdf(-z); // Φc(z)
    let remove_delta = |eps: f64| match inverse(eps) {
        None => -eps.exp_m1(),
        Some(x) => {
            let p_tail = (1.0 - q) * upper_tail(x / sigma) + q * upper_tail((x - 1.0) / sigma);
            p_tail - eps.exp() * upper_tail(x / sigma)
        }
    };
    let add_delta = |eps: f64| match inverse(-eps) {
        None => 0.0,
        Some(x) => {
            let p_head = (1.0 - q) * normal_cdf(x / sigma) + q * normal_cdf((x - 1.0) / sigma);
            normal_cdf(x / sigma) - eps.exp() * p_head
        }
    };
    let (x_lo, x_hi) = (-TAIL_Z * sigma, 1.0 + TAIL_Z * sigma);
    let remove = DiscretePld::connect_the_dots(interval, loss(x_lo), loss(x_hi), remove_delta)?;
    let add = DiscretePld::connect_the_dots(interval, -loss(x_hi), -loss(x_lo), add_delta)?;
    Ok((remove, add))
}

/// A PLD accountant for Poisson-subsampled Gaussian events (add-or-remove adjacency), in
/// bounded memory: when a schedule's loss distribution would exceed 2²⁰ points on the grid,
/// the grid widens 4× (still an upper bound on ε, a looser one) up to a width of 0.0256, beyond
/// which composing is refused.
#[derive(Clone, Debug)]
pub struct PldAccountant {
    /// Every event composed so far: (q, σ, steps).
    events: Vec<(f64, f64, u64)>,
    remove: DiscretePld,
    add: DiscretePld,
}

impl Default for PldAccountant {
    fn default() -> Self {
        Self::with_interval(DEFAULT_INTERVAL)
    }
}

impl PldAccountant {
    /// An accountant with the default grid width (1e-4).
    pub fn new() -> Self {
        Self::default()
    }

    /// An accountant with grid width `interval`: smaller is tighter and slower.
    pub fn with_interval(interval: f64) -> Self {
        PldAccountant {
            events: Vec::new(),
            remove: DiscretePld::identity(interval),
            add: DiscretePld::identity(interval),
        }
    }

    /// One event's two one-step distributions self-composed `steps` times on a grid of width
    /// `interval`, composed onto `base`.
    fn add_event(
        base: (&DiscretePld, &DiscretePld),
        (q, sigma, steps): (f64, f64, u64),
        interval: f64,
        planner: &mut FftPlanner<f64>,
    ) -> Result<(DiscretePld, DiscretePld), PrivacyError> {
        let (r, a) = subsampled_gaussian(q, sigma, interval)?;
        Ok((
            base.0.compose(&r.self_compose(steps, planner)?, planner)?,
            base.1.compose(&a.self_compose(steps, planner)?, planner)?,
        ))
    }

    /// Every event so far, from scratch, on a grid of width `interval`.
    fn build(&self, interval: f64, planner: &mut FftPlanner<f64>) -> Result<(DiscretePld, DiscretePld), PrivacyError> {
        let (mut remove, mut add) = (DiscretePld::identity(interval), DiscretePld::identity(interval));
        for &event in &self.events {
            (remove, add) = Self::add_event((&remove, &add), event, interval, planner)?;
        }
        Ok((remove, add))
    }
}

impl Accountant for PldAccountant {
    fn compose(&mut self, event: DpEvent) -> Result<(), PrivacyError> {
        event.validate()?;
        let DpEvent::PoissonSampledGaussian { sampling_rate, noise_multiplier, steps } = event;
        if steps == 0 {
            return Ok(());
        }
        let event = (sampling_rate, noise_multiplier, steps);
        let mut planner = FftPlanner::new();
        // Onto what is composed already, on the grid in use; only a grid too small for the
        // result makes every event be composed again on a wider one.
        let mut interval = self.remove.interval;
        let mut result = Self::add_event((&self.remove, &self.add), event, interval, &mut planner);
        self.events.push(event);
        loop {
            match result {
                Ok((remove, add)) => {
                    (self.remove, self.add) = (remove, add);
                    return Ok(());
                }
                Err(PrivacyError::GridTooLarge { .. }) if interval * 4.0 <= MAX_INTERVAL => {
                    interval *= 4.0;
                    result = self.build(interval, &mut planner);
                }
                Err(e) => {
                    self.events.pop();
                    return Err(e);
                }
            }
        }
    }

    fn epsilon(&self, delta: f64) -> Result<Epsilon, PrivacyError> {
        check_delta(delta)?;
        Ok(Epsilon { epsilon: self.remove.epsilon(delta)?.max(self.add.epsilon(delta)?), order: None })
    }
}
