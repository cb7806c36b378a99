//! Federation tests: wire format, averaging, heterogeneous clients, determinism.

use tensor_kernels::Cpu;
use vae::{DecoderSpec, LatentPrior, LayerWeights, Loss, TrainOptions, Vae, VaeConfig, VaeWeights};

use crate::*;

fn small() -> VaeConfig {
    VaeConfig { input: 8, encoder: vec![6], latent: 2, decoder: vec![6] }
}

fn local() -> LocalTraining {
    LocalTraining {
        epochs: 2,
        options: TrainOptions {
            batch_size: 8,
            learning_rate: 1e-2,
            kl_weight: 0.1,
            lipschitz_penalty: 0.0,
            ..TrainOptions::default()
        },
    }
}

fn shard(k: usize, n: usize) -> Vec<f32> {
    (0..n * 8).map(|i| ((i * (k + 3)) % 11) as f32 / 10.0).collect()
}

fn decoder_update() -> ClientUpdate {
    let mut vae = Vae::new(&Cpu::new(), &small(), 3).unwrap();
    ClientUpdate {
        client_id: 2,
        round: 1,
        num_samples: 10,
        payload: UpdatePayload::Decoder {
            spec: small().decoder_spec(),
            weights: vae.decoder().weights(),
            prior: LatentPrior::StandardNormal { dim: 2 },
        },
        train_loss: Some(Loss::default()),
        privacy: None,
    }
}

#[test]
fn update_round_trips_through_bincode() {
    let u = decoder_update();
    let bytes = u.encode();
    assert_eq!(ClientUpdate::decode(&bytes, 2).unwrap(), u);
}

#[test]
fn damaged_bytes_are_rejected_with_the_sender_named() {
    let bytes = decoder_update().encode();
    for bad in [&bytes[..bytes.len() - 3], &bytes[..10], &[0xffu8; 64][..]] {
        let e = ClientUpdate::decode(bad, 2).unwrap_err();
        assert!(matches!(e, FederationError::MalformedUpdate { client: 2, .. }), "{e}");
    }
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(matches!(ClientUpdate::decode(&extra, 2), Err(FederationError::MalformedUpdate { .. })));
}

#[test]
fn another_format_or_version_is_refused_with_both_versions_named() {
    let bytes = decoder_update().encode();
    assert!(bytes.starts_with(b"align-fl/update\0\x01\x00"));
    let mut newer = bytes.clone();
    newer[UPDATE_FORMAT.len()] = 2;
    let e = ClientUpdate::decode(&newer, 2).unwrap_err();
    assert!(matches!(e, FederationError::UpdateVersion { client: 2, got: 2, reads: 1 }), "{e}");
    assert!(e.to_string().contains("version 2, but this build reads version 1"), "{e}");
    let e = ClientUpdate::decode(b"PK\x03\x04 a zip file, not an update", 2).unwrap_err().to_string();
    assert!(e.contains("not an align-fl client update") && e.contains("PK"), "{e}");
}

#[test]
fn shape_and_prior_mismatches_are_rejected() {
    let mut u = decoder_update();
    if let UpdatePayload::Decoder { weights, .. } = &mut u.payload {
        weights[0].weight.pop();
    }
    let e = ClientUpdate::decode(&u.encode(), 2).unwrap_err().to_string();
    assert!(e.contains("client 2") && e.contains("decoder layer 0"), "{e}");

    let mut u = decoder_update();
    if let UpdatePayload::Decoder { prior, .. } = &mut u.payload {
        *prior = LatentPrior::StandardNormal { dim: 3 };
    }
    assert!(ClientUpdate::decode(&u.encode(), 2).unwrap_err().to_string().contains("prior has dimension 3"));

    let mut u = decoder_update();
    if let UpdatePayload::Decoder { spec, .. } = &mut u.payload {
        *spec = DecoderSpec { latent: 2, hidden: vec![7], output: 8 };
    }
    assert!(ClientUpdate::decode(&u.encode(), 2).is_err());

    assert!(ClientUpdate::decode(&decoder_update().encode(), 1)
        .unwrap_err()
        .to_string()
        .contains("claims to come from client 2"));
}

#[test]
fn weighted_average_is_exact() {
    let layer = |w: f32, b: f32| LayerWeights { in_dim: 2, out_dim: 1, weight: vec![w, 2.0 * w], bias: vec![b] };
    let a = VaeWeights { encoder: vec![layer(1.0, 0.0)], decoder: vec![layer(0.0, 4.0)] };
    let b = VaeWeights { encoder: vec![layer(4.0, 3.0)], decoder: vec![layer(2.0, -4.0)] };
    let avg = weighted_average(&[(&a, 1), (&b, 2)]);
    assert_eq!(avg.encoder[0].weight, vec![3.0, 6.0]);
    assert_eq!(avg.encoder[0].bias, vec![2.0]);
    assert_eq!(avg.decoder[0].weight, vec![4.0 / 3.0, 8.0 / 3.0]);
    assert!((avg.decoder[0].bias[0] - (-4.0 / 3.0)).abs() < 1e-6);
}

fn align_fl_settings(synthetic_samples: usize, server_epochs: usize) -> AlignFlSettings {
    AlignFlSettings {
        synthetic_samples,
        server_epochs,
        server_training: local().options,
        prior: PriorFit { kind: PriorKind::Gmm, gmm_components: 3 },
        local: local(),
    }
}

fn align_fl_clients(configs: &[VaeConfig], seed: u64) -> Vec<Client<Cpu>> {
    let cpu = Cpu::new();
    configs.iter().enumerate().map(|(k, c)| Client::new(&cpu, k, shard(k, 40), c, seed).unwrap()).collect()
}

fn align_fl_server(global: &VaeConfig, settings: AlignFlSettings, seed: u64) -> Box<dyn Strategy<Cpu>> {
    let init = Vae::new(&Cpu::new(), global, derive_seed(seed, Stream::GlobalInit, 0, 0)).unwrap();
    Box::new(AlignFl::new(init, settings, seed))
}

fn align_fl(configs: &[VaeConfig], global: &VaeConfig, seed: u64) -> Federation<Cpu> {
    Federation::new(align_fl_clients(configs, seed), align_fl_server(global, align_fl_settings(30, 2), seed)).unwrap()
}

#[test]
fn servers_sharing_clients_each_reach_what_they_reach_alone() {
    let configs = [small(), small()];
    let wide = VaeConfig { latent: 3, ..small() };
    let servers =
        [(small(), align_fl_settings(30, 2)), (small(), align_fl_settings(50, 1)), (wide, align_fl_settings(30, 2))];
    let mut shared = Federation::with_servers(
        align_fl_clients(&configs, 5),
        servers.iter().map(|(g, s)| align_fl_server(g, *s, 5)).collect(),
    )
    .unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        outcomes = shared.run_round_on_every_server(&Silent).unwrap();
    }
    for (k, (global, settings)) in servers.iter().enumerate() {
        let mut alone = Federation::new(align_fl_clients(&configs, 5), align_fl_server(global, *settings, 5)).unwrap();
        alone.run_round(&Silent).unwrap();
        let outcome = alone.run_round(&Silent).unwrap();
        assert_eq!(outcomes[k].0, outcome, "server {k}");
        assert_eq!(shared.global_model_of(k).weights(), alone.global_model().weights(), "server {k}");
    }
    assert_ne!(shared.global_model_of(0).weights(), shared.global_model_of(1).weights());
}

#[test]
fn servers_that_plan_differently_cannot_share_clients() {
    let cpu = Cpu::new();
    let fedavg: Box<dyn Strategy<Cpu>> = Box::new(FedAvg::new(Vae::new(&cpu, &small(), 0).unwrap(), local()));
    let servers = vec![align_fl_server(&small(), align_fl_settings(30, 2), 1), fedavg];
    let mut fed = Federation::with_servers(align_fl_clients(&[small()], 1), servers).unwrap();
    let e = fed.run_round_on_every_server(&Silent).unwrap_err().to_string();
    assert!(e.contains("server 1 (fedavg)") && e.contains("same plan"), "{e}");
    assert!(Federation::with_servers(align_fl_clients(&[small()], 1), Vec::new()).is_err());
}

#[test]
fn heterogeneous_architectures_run_under_align_fl() {
    let configs = [
        small(),
        VaeConfig { input: 8, encoder: vec![12, 5], latent: 3, decoder: vec![4] },
        VaeConfig { input: 8, encoder: vec![3], latent: 1, decoder: vec![9, 9] },
    ];
    let global = VaeConfig { input: 8, encoder: vec![10], latent: 2, decoder: vec![10] };
    let mut fed = align_fl(&configs, &global, 1);
    let before = fed.global_model().weights();
    for round in 1..=2 {
        let out = fed.run_round(&Silent).unwrap();
        assert_eq!(out.round, round);
        assert_eq!(out.server.synthetic_samples, 90);
        assert!(out.uplink_bytes > 0);
    }
    assert_ne!(fed.global_model().weights(), before);
}

#[test]
fn fedavg_rejects_heterogeneous_clients() {
    let cpu = Cpu::new();
    let other = VaeConfig { decoder: vec![7], ..small() };
    let clients = vec![
        Client::new(&cpu, 0, shard(0, 16), &small(), 1).unwrap(),
        Client::new(&cpu, 1, shard(1, 16), &other, 1).unwrap(),
    ];
    let strategy = FedAvg::new(Vae::new(&cpu, &small(), 0).unwrap(), local());
    let mut fed = Federation::new(clients, Box::new(strategy)).unwrap();
    let e = fed.run_round(&Silent).unwrap_err().to_string();
    assert!(e.contains("client 1"), "{e}");
}

#[test]
fn fedavg_global_is_the_weighted_mean_of_client_models() {
    let cpu = Cpu::new();
    let clients = vec![
        Client::new(&cpu, 0, shard(0, 16), &small(), 1).unwrap(),
        Client::new(&cpu, 1, shard(1, 48), &small(), 1).unwrap(),
    ];
    let strategy = FedAvg::fedprox(Vae::new(&cpu, &small(), 0).unwrap(), local(), 0.01);
    let mut fed = Federation::new(clients, Box::new(strategy)).unwrap();
    assert_eq!(fed.strategy_name(), "fedprox");
    fed.run_round(&Silent).unwrap();
    let w0 = fed.clients_mut()[0].model().weights();
    let w1 = fed.clients_mut()[1].model().weights();
    let want = weighted_average(&[(&w0, 16), (&w1, 48)]);
    assert_eq!(fed.global_model().weights(), want);
}

fn run_with_threads(threads: usize) -> VaeWeights {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let mut fed = align_fl(&[small(), small(), small()], &small(), 42);
        fed.run_round(&Silent).unwrap();
        fed.run_round(&Silent).unwrap();
        fed.global_model().weights()
    })
}

#[test]
fn results_depend_on_the_seed_not_the_thread_count() {
    let one = run_with_threads(1);
    assert_eq!(one, run_with_threads(2));
    assert_eq!(one, run_with_threads(3));
    let mut other = align_fl(&[small(), small(), small()], &small(), 43);
    other.run_round(&Silent).unwrap();
    other.run_round(&Silent).unwrap();
    assert_ne!(one, other.global_model().weights());
}
