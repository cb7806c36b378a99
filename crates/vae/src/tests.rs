//! Gradient checks and round trips for the VAE.

// Finite-difference loops index weights, gradients and perturbations by one parameter index.
#![allow(clippy::needless_range_loop)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor_kernels::Cpu;

use crate::*;

fn tiny() -> VaeConfig {
    VaeConfig { input: 6, encoder: vec![5, 4], latent: 2, decoder: vec![4, 5] }
}

fn data(rows: usize, input: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows * input).map(|_| rng.gen_range(0.0..1.0)).collect()
}

/// Loss of a fresh model holding `w` (same noise stream every time).
fn loss_at(config: &VaeConfig, w: &VaeWeights, x: &[f32], beta: f32) -> f64 {
    let mut m = Vae::from_weights(&Cpu::new(), config, w, 9).unwrap();
    m.forward_backward(x, beta, None).total
}

fn analytic_grads(config: &VaeConfig, w: &VaeWeights, x: &[f32], beta: f32) -> Vec<Vec<f32>> {
    let mut m = Vae::from_weights(&Cpu::new(), config, w, 9).unwrap();
    m.forward_backward(x, beta, None);
    let mut grads = Vec::new();
    m.params().for_each(|p| grads.push(p.grad[..p.len].to_vec()));
    grads
}

#[test]
fn backward_matches_finite_differences() {
    let config = tiny();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let w = VaeWeights::init(&config, &mut rng);
    let x = data(3, 6, 2);
    let beta = 0.7;
    let grads = analytic_grads(&config, &w, &x, beta);
    let h = 1e-3f32;
    let mut checked = 0;
    let mut p = 0;
    for l in 0..w.encoder.len() + w.decoder.len() {
        for (is_bias, len) in
            [(false, w.layers().nth(l).unwrap().weight.len()), (true, w.layers().nth(l).unwrap().bias.len())]
        {
            for i in 0..len {
                let perturbed = |delta: f32| {
                    let mut w2 = w.clone();
                    let layer = w2.layers_mut().nth(l).unwrap();
                    let v = if is_bias { &mut layer.bias[i] } else { &mut layer.weight[i] };
                    *v += delta;
                    loss_at(&config, &w2, &x, beta)
                };
                let fd = ((perturbed(h) - perturbed(-h)) / (2.0 * f64::from(h))) as f32;
                let an = grads[p][i];
                assert!(
                    (fd - an).abs() <= 2e-2 * fd.abs().max(an.abs()) + 2e-3,
                    "layer {l} {} [{i}]: finite difference {fd}, backward {an}",
                    if is_bias { "bias" } else { "weight" }
                );
                checked += 1;
            }
            p += 1;
        }
    }
    assert_eq!(checked, config.parameter_count());
}

#[test]
fn decoder_output_sum_gradient_matches_finite_differences() {
    let config = tiny();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let w = VaeWeights::init(&config, &mut rng);
    let mut dec = Decoder::from_weights(&Cpu::new(), &config.decoder_spec(), &w.decoder).unwrap();
    let z = vec![0.3f32, -0.7, 1.2, 0.4];
    let g = dec.output_sum_gradient(&z);
    for i in 0..z.len() {
        let row = i / 2;
        let sum_at = |dec: &mut Decoder<Cpu>, d: f32| {
            let mut z2 = z.clone();
            z2[i] += d;
            dec.decode(&z2)[row * 6..(row + 1) * 6].iter().map(|&v| f64::from(v)).sum::<f64>()
        };
        let fd = ((sum_at(&mut dec, 1e-3) - sum_at(&mut dec, -1e-3)) / 2e-3) as f32;
        assert!((fd - g[i]).abs() < 1e-3, "z[{i}]: fd {fd}, analytic {}", g[i]);
    }
}

#[test]
fn training_reduces_the_loss() {
    let config = VaeConfig { input: 16, encoder: vec![32], latent: 2, decoder: vec![32] };
    let mut m = Vae::new(&Cpu::new(), &config, 5).unwrap();
    let mut adam = Adam::new(&mut m, 1e-2);
    // Two clusters of binary-ish patterns.
    let x: Vec<f32> =
        (0..256).flat_map(|i| (0..16).map(move |j| if (j < 8) == (i % 2 == 0) { 0.9 } else { 0.1 })).collect();
    let opts = TrainOptions {
        batch_size: 32,
        learning_rate: 1e-2,
        kl_weight: 0.1,
        lipschitz_penalty: 0.0,
        ..TrainOptions::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let first = m.train_epoch(&x, &opts, &mut adam, &mut rng, None, None).unwrap();
    let mut last = first;
    for _ in 0..30 {
        last = m.train_epoch(&x, &opts, &mut adam, &mut rng, None, None).unwrap();
    }
    assert!(last.reconstruction < 0.25 * first.reconstruction, "{first:?} → {last:?}");
    // The two clusters separate in latent space.
    let mu = m.encode_mean(&x);
    let d = ((mu[0] - mu[2]).powi(2) + (mu[1] - mu[3]).powi(2)).sqrt();
    assert!(d > 0.5, "cluster means only {d} apart");
}

#[test]
fn proximal_term_pulls_towards_the_anchor() {
    let config = tiny();
    let x = data(8, 6, 4);
    let opts = TrainOptions {
        batch_size: 8,
        learning_rate: 1e-2,
        kl_weight: 0.1,
        lipschitz_penalty: 0.0,
        ..TrainOptions::default()
    };
    let distance = |mu: f32| {
        let mut m = Vae::new(&Cpu::new(), &config, 1).unwrap();
        let start = m.weights();
        let anchor = ProximalAnchor::new(&mut m, mu);
        let mut adam = Adam::new(&mut m, 1e-2);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for _ in 0..50 {
            m.train_epoch(&x, &opts, &mut adam, &mut rng, Some(&anchor), None).unwrap();
        }
        m.weights()
            .layers()
            .zip(start.layers())
            .map(|(a, b)| a.weight.iter().zip(&b.weight).map(|(p, q)| (p - q).powi(2)).sum::<f32>())
            .sum::<f32>()
    };
    assert!(distance(10.0) < 0.5 * distance(0.0));
}

#[test]
fn checkpoint_round_trip_and_rejection() {
    let config = tiny();
    let m = Vae::new(&Cpu::new(), &config, 2).unwrap();
    let dir = std::env::temp_dir().join(format!("vae-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    std::fs::write(&path, encode_checkpoint(&config, &m.weights())).unwrap();
    let (c2, w2) = load_checkpoint(&path).unwrap();
    assert_eq!(c2, config);
    assert_eq!(w2, m.weights());
    std::fs::write(&path, b"garbage").unwrap();
    assert!(load_checkpoint(&path).unwrap_err().to_string().contains("m.safetensors"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mismatched_weights_are_rejected() {
    let config = tiny();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut w = VaeWeights::init(&config, &mut rng);
    w.decoder[1].weight.pop();
    let e = Decoder::from_weights(&Cpu::new(), &config.decoder_spec(), &w.decoder).err().unwrap();
    assert!(e.to_string().contains("decoder layer 1"), "{e}");
    let other = VaeConfig { latent: 3, ..tiny() };
    let w = VaeWeights::init(&config, &mut rng);
    assert!(Vae::from_weights(&Cpu::new(), &other, &w, 0).is_err());
    assert!(VaeConfig { latent: 0, ..tiny() }.validate().is_err());
}

/// Ghost norms and clipped sums over `scope` against explicit per-sample gradients: in scope,
/// ‖gᵢ‖² and Σᵢ fᵢ gᵢ with fᵢ = min(1, C / ‖gᵢ‖); out of scope, the plain mean (1/n) Σᵢ gᵢ.
fn check_clipping_against_explicit_gradients(scope: GradientScope) {
    let config = VaeConfig { input: 7, encoder: vec![6, 5], latent: 3, decoder: vec![4, 6] };
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let w = VaeWeights::init(&config, &mut rng);
    let rows = 5;
    let x = data(rows, 7, 12);
    let beta = 0.4;
    let mut model = Vae::from_weights(&Cpu::new(), &config, &w, 13).unwrap();
    let (_, norms) = model.per_sample_gradient_norms(&x, beta, scope, None);
    // Clip at the median norm: some samples are scaled down, the others kept whole.
    let mut sorted: Vec<f64> = norms.iter().map(|s| s.sqrt()).collect();
    sorted.sort_by(f64::total_cmp);
    let clip = sorted[rows / 2];
    let factors: Vec<f64> = norms.iter().map(|s| (clip / (s.sqrt() + 1e-6)).min(1.0)).collect();
    assert!(factors.iter().any(|&f| f < 0.99) && factors.iter().filter(|&&f| f == 1.0).count() >= 2);
    model.clipped_gradient_sum(clip, scope);
    let mut clipped = Vec::new();
    let encoder_len: usize = w.encoder.iter().map(|l| l.weight.len() + l.bias.len()).sum();
    model.params().for_each(|p| clipped.extend_from_slice(&p.grad[..p.len]));
    let in_scope = |k: usize| scope == GradientScope::WholeModel || k >= encoder_len;

    // Explicit: sample i alone, with the same reparameterisation noise, in a batch of one
    // (whose mean loss is exactly ℓᵢ).
    let mut want_sum = vec![0.0f64; clipped.len()];
    for i in 0..rows {
        let mut single = Vae::from_weights(&Cpu::new(), &config, &w, 13).unwrap();
        single.noise.offset = (i * config.latent) as u64;
        single.forward_backward(&x[i * 7..(i + 1) * 7], beta, None);
        let mut g = Vec::new();
        single.params().for_each(|p| g.extend_from_slice(&p.grad[..p.len]));
        let norm_sq: f64 =
            g.iter().enumerate().filter(|&(k, _)| in_scope(k)).map(|(_, &v)| f64::from(v) * f64::from(v)).sum();
        assert!((norms[i] - norm_sq).abs() <= 1e-4 * norm_sq, "sample {i}: ghost {} vs explicit {norm_sq}", norms[i]);
        for (k, (s, v)) in want_sum.iter_mut().zip(&g).enumerate() {
            let weight = if in_scope(k) { factors[i] } else { 1.0 / rows as f64 };
            *s += weight * f64::from(*v);
        }
    }
    let scale = want_sum.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (k, (got, want)) in clipped.iter().zip(&want_sum).enumerate() {
        assert!((f64::from(*got) - want).abs() <= 1e-4 * scale, "parameter {k}: {got} vs {want}");
    }
}

#[test]
fn ghost_norms_and_clipped_sums_equal_explicit_per_sample_gradients() {
    check_clipping_against_explicit_gradients(GradientScope::WholeModel);
}

#[test]
fn decoder_only_clipping_leaves_the_encoder_its_mean_gradient() {
    check_clipping_against_explicit_gradients(GradientScope::DecoderOnly);
}

/// Every weight and bias gradient in `grads` (weight then bias, layer by layer) against central
/// differences (step 1e-3) of `f` at `weights`.
fn assert_gradients_match_central_differences(
    weights: &[LayerWeights],
    grads: &[Vec<f32>],
    f: impl Fn(&[LayerWeights]) -> f64,
) {
    let h = 1e-3f32;
    let mut checked = 0;
    for l in 0..weights.len() {
        for (is_bias, len) in [(false, weights[l].weight.len()), (true, weights[l].bias.len())] {
            for i in 0..len {
                let at = |d: f32| {
                    let mut w = weights.to_vec();
                    if is_bias {
                        w[l].bias[i] += d;
                    } else {
                        w[l].weight[i] += d;
                    }
                    f(&w)
                };
                let fd = ((at(h) - at(-h)) / (2.0 * f64::from(h))) as f32;
                let an = grads[2 * l + usize::from(is_bias)][i];
                assert!(
                    (fd - an).abs() <= 2e-2 * fd.abs().max(an.abs()) + 2e-3,
                    "layer {l} {} [{i}]: finite difference {fd}, analytic {an}",
                    if is_bias { "bias" } else { "weight" }
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, weights.iter().map(|w| w.weight.len() + w.bias.len()).sum::<usize>());
}

#[test]
fn gradient_penalty_and_its_parameter_gradients_match_finite_differences() {
    let spec = DecoderSpec { latent: 3, hidden: vec![5, 4], output: 6 };
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let weights: Vec<LayerWeights> = spec.dims().iter().map(|&(i, o)| LayerWeights::init(i, o, &mut rng)).collect();
    let z: Vec<f32> = (0..4 * 3).map(|_| rng.gen_range(-1.5..1.5)).collect();
    let penalty = |w: &[LayerWeights]| -> f64 {
        let mut dec = Decoder::from_weights(&Cpu::new(), &spec, w).unwrap();
        dec.penalty_at(&z, 1.0)
    };
    // P itself against an f64 evaluation of g by central differences of Σ decoder(z).
    let mut dec = Decoder::from_weights(&Cpu::new(), &spec, &weights).unwrap();
    let mut want = 0.0f64;
    for row in z.chunks(3) {
        let mut norm_sq = 0.0f64;
        for j in 0..3 {
            let sum_at = |dec: &mut Decoder<Cpu>, d: f32| {
                let mut zz = row.to_vec();
                zz[j] += d;
                dec.decode(&zz).iter().map(|&v| f64::from(v)).sum::<f64>()
            };
            let g = (sum_at(&mut dec, 1e-3) - sum_at(&mut dec, -1e-3)) / 2e-3;
            norm_sq += g * g;
        }
        want += ((norm_sq + 1e-7).sqrt() - 1.0).powi(2) / 4.0;
    }
    let got = penalty(&weights);
    assert!((got - want).abs() < 1e-3 * want.max(1e-3), "P {got} vs finite-difference {want}");

    // ∂P/∂θ against central differences of P.
    let mut dec = Decoder::from_weights(&Cpu::new(), &spec, &weights).unwrap();
    dec.zero_gradients();
    dec.penalty_at(&z, 1.0);
    let mut grads = Vec::new();
    dec.params().for_each(|p| grads.push(p.grad[..p.len].to_vec()));
    assert_gradients_match_central_differences(&weights, &grads, penalty);
}

#[test]
fn the_penalty_lowers_the_decoders_lipschitz_constant() {
    // Two clusters whose pixel sums differ by 0.8·64: an unconstrained decoder changes Σ output
    // steeply between them; the penalty pulls ‖∂Σ decoder/∂z‖ towards 1.
    let config = VaeConfig { input: 64, encoder: vec![32], latent: 2, decoder: vec![32] };
    let x: Vec<f32> = (0..256).flat_map(|i| (0..64).map(move |_| if i % 2 == 0 { 0.9 } else { 0.1 })).collect();
    let max_grad_norm = |lambda: f32| {
        let mut m = Vae::new(&Cpu::new(), &config, 3).unwrap();
        let mut adam = Adam::new(&mut m, 1e-2);
        let opts = TrainOptions {
            batch_size: 32,
            learning_rate: 1e-2,
            kl_weight: 0.1,
            lipschitz_penalty: lambda,
            ..TrainOptions::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for _ in 0..40 {
            m.train_epoch(&x, &opts, &mut adam, &mut rng, None, None).unwrap();
        }
        // Latents on the segment between the two cluster means.
        let mu = m.encode_mean(&x[..2 * 64]);
        let path: Vec<f32> = (0..=20)
            .flat_map(|k| {
                let t = k as f32 / 20.0;
                [t * mu[0] + (1.0 - t) * mu[2], t * mu[1] + (1.0 - t) * mu[3]]
            })
            .collect();
        m.decoder()
            .output_sum_gradient(&path)
            .chunks(2)
            .map(|g| (g[0] * g[0] + g[1] * g[1]).sqrt())
            .fold(0.0f32, f32::max)
    };
    let (free, penalised) = (max_grad_norm(0.0), max_grad_norm(1.0));
    assert!(free > 2.0, "the unpenalised decoder should be steep here: {free}");
    assert!(penalised < 0.5 * free, "max ‖g‖: λ = 0 → {free}, λ = 1 → {penalised}");
}

#[test]
fn encoder_shaped_penalty_matches_finite_differences() {
    // The encoder-side penalty runs the same double backward on an MLP whose last layer is
    // linear (the (μ, log σ²) head): its s″ term vanishes. P and ∂P/∂θ against differences.
    use crate::mlp::Mlp;
    use tensor_kernels::Activation;
    let dims = [(7, 5), (5, 4)];
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let weights: Vec<LayerWeights> = dims.iter().map(|&(i, o)| LayerWeights::init(i, o, &mut rng)).collect();
    let x: Vec<f32> = (0..3 * 7).map(|_| rng.gen_range(0.0..1.0)).collect();
    let ones = vec![1.0f32; 3 * 4];
    let acts = vec![Activation::Relu, Activation::Identity];
    let penalty =
        |w: &[LayerWeights]| Mlp::from_weights(&Cpu::new(), w, acts.clone()).gradient_penalty(&x, 3, &ones, 1.0);
    // With a linear head, g = W₁ᵀ D W₂ᵀ 1 per row: P from that, in f64.
    let mut want = 0.0f64;
    for row in x.chunks(7) {
        let (w1, w2) = (&weights[0], &weights[1]);
        let pre: Vec<f64> = (0..5)
            .map(|o| {
                f64::from(w1.bias[o]) + (0..7).map(|i| f64::from(w1.weight[o * 7 + i]) * f64::from(row[i])).sum::<f64>()
            })
            .collect();
        let back: Vec<f64> = (0..5)
            .map(|h| if pre[h] > 0.0 { (0..4).map(|o| f64::from(w2.weight[o * 5 + h])).sum() } else { 0.0 })
            .collect();
        let g: Vec<f64> = (0..7).map(|i| (0..5).map(|h| back[h] * f64::from(w1.weight[h * 7 + i])).sum()).collect();
        let norm = (g.iter().map(|v| v * v).sum::<f64>() + 1e-7).sqrt();
        want += (norm - 1.0).powi(2) / 3.0;
    }
    let got = penalty(&weights);
    assert!((got - want).abs() < 1e-5 * want.max(1.0), "P {got} vs {want}");
    let mut mlp = Mlp::from_weights(&Cpu::new(), &weights, acts.clone());
    mlp.gradient_penalty(&x, 3, &ones, 1.0);
    let mut grads = Vec::new();
    mlp.params().for_each(|p| grads.push(p.grad[..p.len].to_vec()));
    assert_gradients_match_central_differences(&weights, &grads, penalty);
}

#[test]
fn the_encoder_penalty_pulls_the_encoders_gradient_norm_to_one() {
    // P = mean((‖∂Σ(μ, log σ²)/∂x̃‖ − 1)²) over interpolated inputs, measured after training
    // with and without the encoder penalty.
    let config = VaeConfig { input: 16, encoder: vec![16], latent: 2, decoder: vec![16] };
    let x: Vec<f32> = (0..128).flat_map(|i| (0..16).map(move |j| if (i + j) % 3 == 0 { 0.9 } else { 0.1 })).collect();
    let measured = |lambda: f32| {
        let mut m = Vae::new(&Cpu::new(), &config, 4).unwrap();
        let mut adam = Adam::new(&mut m, 1e-2);
        let opts = TrainOptions {
            batch_size: 32,
            learning_rate: 1e-2,
            lipschitz_penalty: lambda,
            penalty_on: PenaltyTarget::Encoder,
            ..TrainOptions::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..40 {
            let loss = m.train_epoch(&x, &opts, &mut adam, &mut rng, None, None).unwrap();
            assert_eq!(loss.penalty == 0.0, lambda == 0.0, "P is computed exactly when λ > 0");
        }
        m.encoder_penalty(&x, 0.0)
    };
    let (free, penalised) = (measured(0.0), measured(1.0));
    assert!(penalised < 0.5 * free, "P after training: λ = 0 → {free}, λ = 1 → {penalised}");
}
