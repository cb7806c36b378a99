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
    let (sigma, eps) = calibrate_noise_multiplier(AccountantKind::Rdp, 2.597, 1e-5, 256.0 / 60000.0, 14063).unwrap();
    assert!(eps <= 2.597 && eps > 2.597 - 1e-3, "ε {eps}");
    assert!((sigma - 1.1).abs() < 0.01, "σ {sigma}");
    // Slightly less noise overshoots the target.
    assert!(rdp_epsilon(256.0 / 60000.0, sigma * 0.99, 14063, 1e-5).epsilon > 2.597);
    assert!(calibrate_noise_multiplier(AccountantKind::Rdp, 0.0, 1e-5, 0.01, 10).is_err());
    assert!(calibrate_noise_multiplier(AccountantKind::Rdp, 1e-9, 1e-5, 1.0, 1_000_000_000).is_err());
    // PLD needs less noise for the same target.
    let (pld_sigma, pld_eps) =
        calibrate_noise_multiplier(AccountantKind::Pld, 2.597, 1e-5, 256.0 / 60000.0, 14063).unwrap();
    assert!(pld_eps <= 2.597 && pld_eps > 2.596, "ε {pld_eps}");
    assert!(pld_sigma < sigma, "PLD σ {pld_sigma} vs RDP σ {sigma}");
}

fn pld_epsilon(q: f64, sigma: f64, steps: u64, delta: f64) -> f64 {
    let mut acc = PldAccountant::new();
    acc.compose(DpEvent::PoissonSampledGaussian { sampling_rate: q, noise_multiplier: sigma, steps }).unwrap();
    acc.epsilon(delta).unwrap().epsilon
}

#[test]
fn pld_is_tighter_than_rdp_on_the_mnist_case() {
    // dp_accounting: RDP 2.597, PLD ≈ 2.38 for q = 256/60000, σ = 1.1, 14063 steps, δ = 1e-5.
    let eps = pld_epsilon(256.0 / 60000.0, 1.1, 14063, 1e-5);
    assert!(eps > 2.37 && eps < 2.39, "PLD ε {eps}");
}

#[test]
fn pld_is_never_looser_than_rdp_on_the_fixture() {
    let fixture: serde_json::Value = serde_json::from_str(RDP_REFERENCE).unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let f = |k: &str| case[k].as_f64().unwrap();
        let steps = case["steps"].as_u64().unwrap();
        let pld = pld_epsilon(f("q"), f("sigma"), steps, f("delta"));
        assert!(pld <= f("eps_rdp") * (1.0 + 1e-9), "case {case}: PLD {pld} > RDP {}", f("eps_rdp"));
        assert!(pld > 0.0, "case {case}: PLD {pld}");
    }
}

/// The paper-protocol schedule (q = 128/12000, 4700 steps) at targets from 1 to 100: the PLD
/// calibration finishes (in bounded memory: the grid holds at most 2²⁰ points) and never asks
/// for more noise than RDP.
#[test]
fn pld_calibration_stays_bounded_and_below_rdp() {
    let (q, steps, delta) = (0.0107, 4700, 1e-5);
    for target in [1.0, 20.0, 100.0] {
        let (rdp, _) = calibrate_noise_multiplier(AccountantKind::Rdp, target, delta, q, steps).unwrap();
        let (pld, eps) = calibrate_noise_multiplier(AccountantKind::Pld, target, delta, q, steps).unwrap();
        assert!(eps <= target, "ε = {target}: PLD σ {pld} gives ε {eps}");
        assert!(pld <= rdp * (1.0 + 1e-9), "ε = {target}: PLD σ {pld} above RDP σ {rdp}");
    }
}

#[test]
fn extreme_requests_get_errors_or_warnings_not_null_or_crashes() {
    // δ below what the PLD resolves: an error naming the mass at +∞, not ε = ∞ (printed as null).
    let mut acc = PldAccountant::new();
    let event = DpEvent::PoissonSampledGaussian { sampling_rate: 0.0107, noise_multiplier: 1.0, steps: 4700 };
    acc.compose(event).unwrap();
    let e = acc.epsilon(1e-16).unwrap_err();
    assert!(matches!(e, PrivacyError::DeltaBelowResolution { .. }), "{e}");
    assert!(e.to_string().contains("use δ ≥"), "{e}");
    // A schedule too spread out for the bounded grid is refused with the fix.
    let mut acc = PldAccountant::new();
    let tiny = DpEvent::PoissonSampledGaussian { sampling_rate: 0.5, noise_multiplier: 0.01, steps: 1000 };
    let e = acc.compose(tiny).unwrap_err().to_string();
    assert!(e.contains("use --accountant rdp"), "{e}");
    // An absurd target ε: an answer or a clear error, never a crash.
    for accountant in [AccountantKind::Rdp, AccountantKind::Pld] {
        if let Err(e) = calibrate_noise_multiplier(accountant, 1e300, 1e-5, 0.0107, 4700) {
            assert!(e.to_string().contains("accountant"), "{e}");
        }
    }
    // An implausible σ is named.
    let (sigma, _) = calibrate_noise_multiplier(AccountantKind::Rdp, 1.0, 1e-14, 0.5, 10_000).unwrap();
    let warning = implausible_noise(sigma, 1.0, 1e-14).expect("a warning");
    assert!(warning.contains("drowns"), "{warning}");
    assert!(implausible_noise(1.1, 10.0, 1e-5).is_none());
}

#[test]
fn pld_of_the_plain_gaussian_matches_the_closed_form() {
    // q = 1: the Gaussian mechanism, δ(ε) = Φ(−ε σ + 1/(2σ)) − e^ε Φ(−ε σ − 1/(2σ)) (Balle & Wang 2018).
    let sigma = 2.0;
    let phi = |z: f64| 0.5 * libm::erfc(-z / std::f64::consts::SQRT_2);
    let exact_delta = |eps: f64| phi(-eps * sigma + 0.5 / sigma) - eps.exp() * phi(-eps * sigma - 0.5 / sigma);
    let eps = pld_epsilon(1.0, sigma, 1, 1e-5);
    // The discretised ε is pessimistic by at most a grid step or two.
    assert!(exact_delta(eps) <= 1e-5 * (1.0 + 1e-6), "δ at the PLD's ε is {}", exact_delta(eps));
    assert!(exact_delta(eps - 3e-4) > 1e-5, "PLD ε {eps} is loose");
}

mod dp_sgd {
    use crate::*;
    use rand::{Rng, SeedableRng};
    use tensor_kernels::Cpu;
    use vae::{Adam, GradientScope, TrainOptions, Vae, VaeConfig};

    fn config() -> VaeConfig {
        VaeConfig { input: 16, encoder: vec![24], latent: 2, decoder: vec![24] }
    }

    fn data() -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        (0..200)
            .flat_map(|i| (0..16).map(move |j| if (j < 8) == (i % 2 == 0) { 0.9 } else { 0.1 }))
            .map(|v| v + 0.05 * rng.gen::<f32>())
            .collect()
    }

    const ADAPTIVE: AdaptiveClipping = AdaptiveClipping { target_quantile: 0.5, learning_rate: 0.2, count_noise: 1.0 };

    fn settings(clipping: ClippingRule, noise: NoiseSource, seed: u64, sigma: f64) -> DpSgdSettings {
        DpSgdSettings {
            noise_multiplier: sigma,
            max_grad_norm: 1.0,
            clipping,
            adaptive: ADAPTIVE,
            sampling: Sampling::Poisson,
            noise,
            seed,
            scope: GradientScope::WholeModel,
        }
    }

    /// Trains for `epochs` and returns (weights, first-epoch loss, last-epoch loss, dp state).
    fn train(s: DpSgdSettings, epochs: usize) -> (vae::VaeWeights, f64, f64, DpSgd) {
        let x = data();
        let opts = TrainOptions {
            batch_size: 20,
            learning_rate: 1e-2,
            kl_weight: 0.1,
            lipschitz_penalty: 0.0,
            ..TrainOptions::default()
        };
        let mut model = Vae::new(&Cpu::new(), &config(), 1).unwrap();
        let mut adam = Adam::new(&mut model, opts.learning_rate);
        let mut dp = DpSgd::new(s, 200, 20, 3).unwrap();
        let first = dp.train_epoch(&mut model, &x, &opts, &mut adam, None).unwrap().total;
        let mut last = first;
        for _ in 1..epochs {
            last = dp.train_epoch(&mut model, &x, &opts, &mut adam, None).unwrap().total;
        }
        (model.weights(), first, last, dp)
    }

    #[test]
    fn reproducible_mode_repeats_and_secure_mode_does_not() {
        let rep = settings(ClippingRule::Fixed, NoiseSource::Reproducible, 9, 1.0);
        let (a, ..) = train(rep, 2);
        let (b, ..) = train(rep, 2);
        assert_eq!(a, b);
        let sec = settings(ClippingRule::Fixed, NoiseSource::Secure, 0, 1.0);
        let (c, ..) = train(sec, 2);
        let (d, ..) = train(sec, 2);
        assert_ne!(c, d);
    }

    #[test]
    fn training_learns_with_moderate_noise_and_not_with_overwhelming_noise() {
        let (_, first, last, dp) = train(settings(ClippingRule::Fixed, NoiseSource::Reproducible, 1, 0.5), 30);
        assert!(last < 0.6 * first, "σ = 0.5: {first} → {last}");
        assert_eq!(dp.steps(), 30 * 10);
        let (_, first, last, _) = train(settings(ClippingRule::Fixed, NoiseSource::Reproducible, 1, 1e4), 30);
        assert!(last > 0.8 * first, "σ = 1e4 should drown the gradient: {first} → {last}");
    }

    #[test]
    fn adaptive_clipping_tracks_the_target_quantile() {
        let start = DpSgdSettings {
            max_grad_norm: 100.0,
            ..settings(ClippingRule::Adaptive, NoiseSource::Reproducible, 2, 1.0)
        };
        let (_, _, _, dp) = train(start, 40);
        // Started at C = 100, far above every per-sample norm: C must fall to the norms' median.
        assert!(dp.clip_norm() < 10.0, "C = {}", dp.clip_norm());
        let f = dp.last_unclipped_fraction();
        assert!((0.1..=0.9).contains(&f), "unclipped fraction {f}");
        // σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−1/2) = (1 − 1/4)^(−1/2).
        assert!((dp.gradient_noise_multiplier() - (0.75f64).powf(-0.5)).abs() < 1e-12);
    }

    #[test]
    fn report_says_when_the_guarantee_does_not_hold() {
        let (_, _, _, dp) = train(settings(ClippingRule::Fixed, NoiseSource::Secure, 0, 1.0), 1);
        let spent = dp.spent(1e-5, AccountantKind::Rdp, &[]).unwrap();
        assert!(spent.guarantee_holds && spent.reasons.is_empty());
        assert_eq!(spent.steps, 10);
        let mut acc = RdpAccountant::new();
        acc.compose(DpEvent::PoissonSampledGaussian { sampling_rate: 0.1, noise_multiplier: 1.0, steps: 10 }).unwrap();
        assert_eq!(spent.epsilon, acc.epsilon(1e-5).unwrap().epsilon);

        let mut s = settings(ClippingRule::PaperMedian, NoiseSource::Reproducible, 1, 1.0);
        s.sampling = Sampling::Shuffled;
        let (_, _, _, dp) = train(s, 1);
        let spent =
            dp.spent(1e-5, AccountantKind::Rdp, &["the GMM prior was fitted on private latents".into()]).unwrap();
        assert!(!spent.guarantee_holds);
        assert_eq!(spent.reasons.len(), 4, "{:?}", spent.reasons);
    }

    /// Encoder and decoder weights after one full-batch step (q = 1) at noise multiplier σ.
    fn one_step(scope: GradientScope, sigma: f64) -> (Vec<vae::LayerWeights>, Vec<vae::LayerWeights>, PrivacySpent) {
        let x = data();
        let opts = TrainOptions { batch_size: 200, ..TrainOptions::default() };
        let mut model = Vae::new(&Cpu::new(), &config(), 1).unwrap();
        let mut adam = Adam::new(&mut model, opts.learning_rate);
        let s = DpSgdSettings { scope, ..settings(ClippingRule::Fixed, NoiseSource::Reproducible, 6, sigma) };
        let mut dp = DpSgd::new(s, 200, 200, 0).unwrap();
        dp.train_epoch(&mut model, &x, &opts, &mut adam, None).unwrap();
        let w = model.weights();
        (w.encoder, w.decoder, dp.spent(1e-5, AccountantKind::Rdp, &[]).unwrap())
    }

    #[test]
    fn decoder_only_scope_noises_the_decoder_alone_and_claims_no_guarantee() {
        let (enc_quiet, dec_quiet, spent) = one_step(GradientScope::DecoderOnly, 1e-3);
        let (enc_loud, dec_loud, _) = one_step(GradientScope::DecoderOnly, 1e4);
        assert_eq!(enc_quiet, enc_loud, "the encoder's step must not see the noise");
        assert_ne!(dec_quiet, dec_loud);
        assert!(!spent.guarantee_holds);
        assert!(spent.reasons.iter().any(|r| r.contains("decoder only")), "{:?}", spent.reasons);
        let (enc_quiet, ..) = one_step(GradientScope::WholeModel, 1e-3);
        let (enc_loud, ..) = one_step(GradientScope::WholeModel, 1e4);
        assert_ne!(enc_quiet, enc_loud, "whole-model DP-SGD noises the encoder too");
    }

    #[test]
    fn poisson_sampling_survives_empty_batches() {
        // q = 1/200: most batches are empty and take a noise-only step.
        let x = data();
        let opts = TrainOptions {
            batch_size: 1,
            learning_rate: 1e-3,
            kl_weight: 0.1,
            lipschitz_penalty: 0.0,
            ..TrainOptions::default()
        };
        let mut model = Vae::new(&Cpu::new(), &config(), 1).unwrap();
        let before = model.weights();
        let mut adam = Adam::new(&mut model, opts.learning_rate);
        let s = settings(ClippingRule::Fixed, NoiseSource::Reproducible, 4, 1.0);
        let mut dp = DpSgd::new(s, 200, 1, 0).unwrap();
        let loss = dp.train_epoch(&mut model, &x, &opts, &mut adam, None).unwrap();
        assert_eq!(dp.steps(), 200);
        assert!(loss.total.is_finite());
        assert_ne!(model.weights(), before, "noise-only steps still move the weights");
    }

    #[test]
    fn invalid_settings_are_refused() {
        let s = settings(ClippingRule::Fixed, NoiseSource::Secure, 0, 1.0);
        assert!(DpSgd::new(DpSgdSettings { noise_multiplier: 0.0, ..s }, 100, 10, 0).is_err());
        assert!(DpSgd::new(DpSgdSettings { max_grad_norm: -1.0, ..s }, 100, 10, 0).is_err());
        assert!(DpSgd::new(s, 10, 100, 0).is_err());
        let tight = DpSgdSettings {
            adaptive: AdaptiveClipping { count_noise: 0.4, ..ADAPTIVE },
            ..settings(ClippingRule::Adaptive, NoiseSource::Secure, 0, 1.0)
        };
        let e = DpSgd::new(tight, 100, 10, 0).err().unwrap();
        assert!(e.to_string().contains("σ_b must exceed σ/2"), "{e}");
    }
}
