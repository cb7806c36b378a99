//! The smallest noise multiplier that reaches a target ε: ε(σ) is decreasing in σ, so a
//! bracketing search followed by false position finds it to within 1e-3 in ε. For PLD the search
//! starts from RDP's answer, an upper bracket (RDP's ε is never below PLD's), and brackets
//! downwards in steps of 15 %, so the expensive PLD is evaluated only near the answer, where its
//! grid stays small; a σ whose grid would exceed the accountant's bound counts as ε = ∞.

use crate::{Accountant, AccountantKind, DpEvent, PrivacyError};

/// Tolerance in ε: the returned σ gives ε ∈ [target − 1e-3, target].
const EPSILON_TOLERANCE: f64 = 1e-3;
/// Largest noise multiplier tried.
const MAX_SIGMA: f64 = 1e4;
/// A calibrated σ above this drowns the gradient in noise: [`implausible_noise`] warns.
const PLAUSIBLE_SIGMA: f64 = 50.0;

/// The smallest σ (to tolerance) whose ε at `delta` after `steps` Poisson-sampled Gaussian steps
/// at rate `sampling_rate` is at most `target_epsilon` under `accountant`. Returns (σ, ε(σ)).
pub fn calibrate_noise_multiplier(
    accountant: AccountantKind,
    target_epsilon: f64,
    delta: f64,
    sampling_rate: f64,
    steps: u64,
) -> Result<(f64, f64), PrivacyError> {
    let (start, shrink) = match accountant {
        AccountantKind::Rdp => (1.0, 0.5),
        AccountantKind::Pld => {
            (calibrate_noise_multiplier(AccountantKind::Rdp, target_epsilon, delta, sampling_rate, steps)?.0, 0.85)
        }
    };
    let schedule = Schedule { delta, sampling_rate, steps };
    bisect(|| accountant.make(), start, shrink, target_epsilon, schedule)
}

/// A warning when a calibrated σ is implausibly large for the request (the noise drowns the
/// gradient), or None.
pub fn implausible_noise(sigma: f64, target_epsilon: f64, delta: f64) -> Option<String> {
    (sigma > PLAUSIBLE_SIGMA).then(|| {
        format!(
            "warning: σ = {sigma:.1} reaches ε = {target_epsilon} at δ = {delta:e}, but noise this large drowns every \
             gradient: check that δ and ε are what you meant (δ is usually about 1 / the number of records)"
        )
    })
}

/// The DP-SGD schedule being calibrated.
#[derive(Clone, Copy)]
struct Schedule {
    delta: f64,
    sampling_rate: f64,
    steps: u64,
}

fn bisect<A: Accountant>(
    make: impl Fn() -> A,
    start: f64,
    shrink: f64,
    target_epsilon: f64,
    schedule: Schedule,
) -> Result<(f64, f64), PrivacyError> {
    let Schedule { delta, sampling_rate, steps } = schedule;
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
    // Below the answer a grid too large to hold means a loss too spread out: ε above the target.
    let eps_or_infinite = |sigma: f64| match eps(sigma) {
        Err(PrivacyError::GridTooLarge { .. }) => Ok(f64::INFINITY),
        other => other,
    };
    // Bracket: hi reaches the target, lo does not.
    let mut hi = start;
    let mut e_hi = eps(hi)?;
    while e_hi > target_epsilon {
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
        e_hi = eps(hi)?;
    }
    let mut lo = hi * shrink;
    let mut e_lo = eps_or_infinite(lo)?;
    while e_lo <= target_epsilon {
        (hi, e_hi) = (lo, e_lo);
        lo *= shrink;
        if lo < 1e-6 {
            return Ok((hi, e_hi));
        }
        e_lo = eps_or_infinite(lo)?;
    }
    // Illinois false position on f(σ) = ε(σ) − target (Dowell & Jarratt 1971): interpolate
    // between the ends, halving the weight of an end kept twice in a row so neither end stalls;
    // bisect while the lower end's ε is unknown (∞).
    let (mut f_lo, mut f_hi) = (e_lo - target_epsilon, e_hi - target_epsilon);
    let mut kept_lo = None;
    while target_epsilon - e_hi > EPSILON_TOLERANCE && hi - lo > 1e-12 {
        let interpolated = hi - f_hi * (lo - hi) / (f_lo - f_hi);
        let margin = 1e-3 * (hi - lo);
        let mid = if f_lo.is_finite() && interpolated > lo + margin && interpolated < hi - margin {
            interpolated
        } else {
            0.5 * (lo + hi)
        };
        let e = eps_or_infinite(mid)?;
        if e <= target_epsilon {
            (hi, e_hi, f_hi) = (mid, e, e - target_epsilon);
            if kept_lo == Some(true) {
                f_lo *= 0.5;
            }
            kept_lo = Some(true);
        } else {
            (lo, f_lo) = (mid, e - target_epsilon);
            if kept_lo == Some(false) {
                f_hi *= 0.5;
            }
            kept_lo = Some(false);
        }
    }
    Ok((hi, e_hi))
}
