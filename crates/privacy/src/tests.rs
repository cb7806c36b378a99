//! Accountant tests against Google dp_accounting 0.6.0 (../shared/fixtures/rdp_reference.json).

use crate::*;

/// The fixture, copied into the repository so the test runs without ../shared.
const RDP_REFERENCE: &str = include_str!("../tests/rdp_reference.json");

fn rdp_epsilon(q: f64, sigma: f64, steps: u64, delta: f64) -> Epsilon {
    let mut acc = RdpAccountant::new();
    acc.compose(DpEvent::PoissonSampledGaussian { sampling_rate: q, noise_multiplier: sigma, steps }).unwrap();
    acc.epsilon(delta).unwrap()
}

#[test]
fn rdp_matches_dp_accounting_fixture() {
    let fixture: serde_json::Value = serde_json::from_str(RDP_REFERENCE).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in cases {
        let f = |k: &str| case[k].as_f64().unwrap();
        let got = rdp_epsilon(f("q"), f("sigma"), case["steps"].as_u64().unwrap(), f("delta"));
        let want = f("eps_rdp");
        let rel = ((got.epsilon - want) / want).abs();
        if rel >= 1e-6 || got.order != Some(f("order")) {
            failures.push(format!("{case}: ε {} (relative error {rel:e}), order {:?}", got.epsilon, got.order));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn mnist_example_from_the_literature() {
    // Abadi et al. / dp_accounting: q = 256/60000, σ = 1.1, 14063 steps (60 epochs), δ = 1e-5 → ε ≈ 2.597.
    let e = rdp_epsilon(256.0 / 60000.0, 1.1, 14063, 1e-5);
    assert!((e.epsilon - 2.597).abs() < 1e-3, "{e:?}");
}

#[test]
fn composition_of_heterogeneous_events_adds_rdp() {
    let mut acc = RdpAccountant::new();
    acc.compose(DpEvent::PoissonSampledGaussian { sampling_rate: 0.01, noise_multiplier: 1.0, steps: 100 }).unwrap();
    acc.compose(DpEvent::PoissonSampledGaussian { sampling_rate: 0.02, noise_multiplier: 2.0, steps: 50 }).unwrap();
    let both = acc.epsilon(1e-5).unwrap().epsilon;
    let first = rdp_epsilon(0.01, 1.0, 100, 1e-5).epsilon;
    let second = rdp_epsilon(0.02, 2.0, 50, 1e-5).epsilon;
    assert!(both > first.max(second) && both < first + second, "{both} vs {first} + {second}");
}

#[test]
fn full_batch_gaussian_has_the_closed_form_rdp() {
    // q = 1: RDP(α) = α / (2σ²).
    for alpha in [1.5, 2.0, 10.0, 32.0] {
        assert!((subsampled_gaussian_rdp(1.0, 2.0, alpha) - alpha / 8.0).abs() < 1e-12);
    }
    // Fractional and integer orders agree where they meet (continuity in α).
    let a = subsampled_gaussian_rdp(0.01, 1.3, 3.0);
    let b = subsampled_gaussian_rdp(0.01, 1.3, 3.0 + 1e-7);
    assert!((a - b).abs() / a < 1e-4, "{a} vs {b}");
}

#[test]
fn invalid_parameters_are_refused() {
    let mut acc = RdpAccountant::new();
    for (q, s) in [(0.0, 1.0), (1.5, 1.0), (0.1, 0.0), (0.1, -1.0), (f64::NAN, 1.0)] {
        let e = acc.compose(DpEvent::PoissonSampledGaussian { sampling_rate: q, noise_multiplier: s, steps: 1 });
        assert!(e.is_err(), "q = {q}, σ = {s}");
    }
    for d in [0.0, 1.0, -1e-5] {
        assert!(acc.epsilon(d).is_err(), "δ = {d}");
    }
}

#[test]
fn calibration_finds_the_smallest_sigma() {
    let (sigma, eps) = calibrate_noise_multiplier(RdpAccountant::new, 2.597, 1e-5, 256.0 / 60000.0, 14063).unwrap();
    assert!(eps <= 2.597 && eps > 2.597 - 1e-3, "ε {eps}");
    assert!((sigma - 1.1).abs() < 0.01, "σ {sigma}");
    // Slightly less noise overshoots the target.
    assert!(rdp_epsilon(256.0 / 60000.0, sigma * 0.99, 14063, 1e-5).epsilon > 2.597);
    assert!(calibrate_noise_multiplier(RdpAccountant::new, 0.0, 1e-5, 0.01, 10).is_err());
    assert!(calibrate_noise_multiplier(RdpAccountant::new, 1e-9, 1e-5, 1.0, 1_000_000_000).is_err());
}
