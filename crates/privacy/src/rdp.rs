//! Rényi-DP accounting of the Poisson-subsampled Gaussian mechanism (Mironov, Talwar, Zhang 2019,
//! "Rényi Differential Privacy of the Sampled Gaussian Mechanism", §3.3), computed in log space at
//! integer and fractional orders exactly as Google's `dp_accounting` `RdpAccountant` does, and
//! converted to (ε, δ) with its conversion: ε = min over orders α of
//! rdp(α) + log1p(−1/α) − log(δ·α)/(α − 1) (Canonne, Kamath, Steinke 2020, Prop. 12; Asoodeh et al.
//! 2020), or 0 when δ² + expm1(−rdp) > 0.

use crate::{Accountant, DpEvent, Epsilon, PrivacyError};

/// dp_accounting's default orders: 1.1, 1.2, …, 10.9, 11, 12, …, 63, 128, 256, 512, 1024.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    orders.extend((11..64).map(f64::from));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
}

/// log(e^a + e^b).
fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// log erfc(x), accurate also where erfc underflows (asymptotic series for large x).
fn log_erfc(x: f64) -> f64 {
    if x < 25.0 {
        libm::erfc(x).ln()
    } else {
        // erfc(x) = e^(−x²)/(x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + 105/(16x⁸) …)
        let x2 = x * x;
        let series = 1.0 - 1.0 / (2.0 * x2) + 3.0 / (4.0 * x2 * x2) - 15.0 / (8.0 * x2 * x2 * x2)
            + 105.0 / (16.0 * x2 * x2 * x2 * x2);
        -x2 - (x * std::f64::consts::PI.sqrt()).ln() + series.ln()
    }
}

/// ln |Γ(x)|.
fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// ln |C(n, k)| through ln |Γ|, also for fractional n.
fn log_binomial(n: f64, k: f64) -> f64 {
    ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0)
}

/// log A_α for integer α (Mironov et al. 2019, §3.3): log Σᵢ C(α,i) qⁱ (1−q)^(α−i) e^((i²−i)/(2σ²)).
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let mut log_a = f64::NEG_INFINITY;
    let a = alpha as f64;
    for i in 0..=alpha {
        let fi = i as f64;
        let log_coef = log_binomial(a, fi) + fi * q.ln() + (a - fi) * (-q).ln_1p();
        log_a = log_add(log_a, log_coef + (fi * fi - fi) / (2.0 * sigma * sigma));
    }
    log_a
}

/// log A_α for fractional α: the two half-line integrals as series over i, summed until both
/// terms fall below e^−30. As dp_accounting (≥ 0.4.4) does, every term enters with |C(α, i)|,
/// which bounds A_α from above (the exact series alternates in sign once i > α + 1).
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let mut i = 0.0f64;
    loop {
        let log_coef = log_binomial(alpha, i);
        let j = alpha - i;
        let log_t0 = log_coef + i * q.ln() + j * (-q).ln_1p();
        let log_t1 = log_coef + j * q.ln() + i * (-q).ln_1p();
        let log_e0 = 0.5f64.ln() + log_erfc((i - z0) / (std::f64::consts::SQRT_2 * sigma));
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / (std::f64::consts::SQRT_2 * sigma));
        let log_s0 = log_t0 + (i * i - i) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        i += 1.0;
        if log_s0.max(log_s1) < -30.0 {
            break;
        }
    }
    log_add(log_a0, log_a1)
}

/// RDP of one step of the Poisson-subsampled Gaussian with sampling rate q and noise multiplier σ
/// at order α.
pub fn subsampled_gaussian_rdp(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if sigma == 0.0 || alpha.is_infinite() {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    let log_a = if alpha.fract() == 0.0 { log_a_int(q, sigma, alpha as u64) } else { log_a_frac(q, sigma, alpha) };
    log_a / (alpha - 1.0)
}

/// The (ε, order) of an RDP curve at δ with dp_accounting's conversion.
pub fn rdp_to_epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, orders[0]);
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = if delta * delta + (-r).exp_m1() > 0.0 {
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.0 {
            best = (eps, a);
        }
    }
    (best.0.max(0.0), best.1)
}

/// An RDP accountant over dp_accounting's default orders.
#[derive(Clone, Debug)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        let orders = default_orders();
        let rdp = vec![0.0; orders.len()];
        RdpAccountant { orders, rdp }
    }
}

impl RdpAccountant {
    /// An accountant with nothing composed yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Accountant for RdpAccountant {
    fn compose(&mut self, event: DpEvent) -> Result<(), PrivacyError> {
        event.validate()?;
        let DpEvent::PoissonSampledGaussian { sampling_rate, noise_multiplier, steps } = event;
        for (r, &a) in self.rdp.iter_mut().zip(&self.orders) {
            *r += steps as f64 * subsampled_gaussian_rdp(sampling_rate, noise_multiplier, a);
        }
        Ok(())
    }

    fn epsilon(&self, delta: f64) -> Result<Epsilon, PrivacyError> {
        crate::check_delta(delta)?;
        let (epsilon, order) = rdp_to_epsilon(&self.orders, &self.rdp, delta);
        Ok(Epsilon { epsilon, order: Some(order) })
    }
}
