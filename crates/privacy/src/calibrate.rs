//! The smallest noise multiplier that reaches a target ε: ε(σ) is decreasing in σ, so a
//! bracketing search followed by bisection finds it to within 1e-3 in ε. For PLD the search
//! starts from RDP's answer, an upper bracket (RDP's ε is never below PLD's) that saves most of
//! the expensive PLD evaluations.

use crate::{Accountant, AccountantKind, DpEvent, PrivacyError};

/// Tolerance in ε: the returned σ gives ε ∈ [target − 1e-3, target].
const EPSILON_TOLERANCE: f64 = 1e-3;
/// Largest noise multiplier tried.
const MAX_SIGMA: f64 = 1e4;

/// The smallest σ (to tolerance) whose ε at `delta` after `steps` Poisson-sampled Gaussian steps
/// at rate `sampling_rate` is at most `target_epsilon` under `accountant`. Returns (σ, ε(σ)).
pub fn calibrate_noise_multiplier(
    accountant: AccountantKind,
    target_epsilon: f64,
    delta: f64,
    sampling_rate: f64,
    steps: u64,
) -> Result<(f64, f64), PrivacyError> {
    let start = match accountant {
        AccountantKind::Rdp => 1.0,
        AccountantKind::Pld => {
            calibrate_noise_multiplier(AccountantKind::Rdp, target_epsilon, delta, sampling_rate, steps)?.0
        }
    };
    bisect(|| accountant.make(), start, target_epsilon, delta, sampling_rate, steps)
}

fn bisect<A: Accountant>(
    make: impl Fn() -> A,
    start: f64,
    target_epsilon: f64,
    delta: f64,
    sampling_rate: f64,
    steps: u64,
) -> Result<(f64, f64), PrivacyError> {
    if !(target_epsilon > 0.0 && target_epsilon.is_finite()) {
        return Err(PrivacyError::InvalidParameter {
            name: "target ε",
            value: target_epsilon,
            expected: "the target must be a positive finite number",
        });
    }
    if steps == 0 {
        return Err(PrivacyError::InvalidParameter { name: "steps", value: 0.0, expected: "at least one step" });
    }
    let eps = |sigma: f64| -> Result<f64, PrivacyError> {
        let mut acc = make();
        acc.compose(DpEvent::PoissonSampledGaussian { sampling_rate, noise_multiplier: sigma, steps })?;
        Ok(acc.epsilon(delta)?.epsilon)
    };
    // Bracket: hi reaches the target, lo does not.
    let mut hi = start;
    while eps(hi)? > target_epsilon {
        hi *= 2.0;
        if hi > MAX_SIGMA {
            return Err(PrivacyError::Unreachable {
                target: target_epsilon,
                reason: format!(
                    "even σ = {MAX_SIGMA} gives ε = {:.4}; raise the target or δ, or take fewer steps",
                    eps(MAX_SIGMA)?
                ),
            });
        }
    }
    let mut lo = hi / 2.0;
    while eps(lo)? <= target_epsilon {
        hi = lo;
        lo /= 2.0;
        if lo < 1e-6 {
            return Ok((hi, eps(hi)?));
        }
    }
    let mut e_hi = eps(hi)?;
    while target_epsilon - e_hi > EPSILON_TOLERANCE && hi - lo > 1e-12 {
        let mid = 0.5 * (lo + hi);
        let e = eps(mid)?;
        if e <= target_epsilon {
            hi = mid;
            e_hi = e;
        } else {
            lo = mid;
        }
    }
    Ok((hi, e_hi))
}
