//! A deployed run, one round per call with state on disk, against the single-process
//! simulation; clients that fail or vanish; clients that restart.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use pipeline::deploy::{client_round, server_init, server_round, write_client_shard, ClientData, ServerRound};
use pipeline::{ExperimentConfig, Mechanism, PipelineError, Quiet, StrategyKind};
use privacy::NoiseSource;
use tensor_kernels::Cpu;

/// The tiny config for two rounds.
fn two_rounds() -> ExperimentConfig {
    let mut cfg = tiny();
    cfg.rounds = 2;
    cfg
}

/// A deployment's folders: the server's state and each client's; the clients in `own_images`
/// train on that image file instead of their shard of the data directory.
struct Sites {
    root: PathBuf,
    own_images: BTreeMap<usize, PathBuf>,
}

impl Sites {
    fn new(name: &str) -> Self {
        Sites { root: temp_dir(name), own_images: BTreeMap::new() }
    }
    fn server(&self) -> PathBuf {
        self.root.join("server")
    }
    fn client(&self, k: usize) -> PathBuf {
        self.root.join(format!("client-{k}"))
    }
    fn downlink(&self) -> PathBuf {
        self.root.join("downlink.bin")
    }
    fn update(&self, k: usize) -> PathBuf {
        self.root.join(format!("update-{k}.bin"))
    }

    /// Client k's round from the current downlink.
    fn client_round(&self, cfg: &ExperimentConfig, k: usize) -> pipeline::Result<pipeline::deploy::ClientRoundResult> {
        let data_dir = cfg.data_dir(None);
        let data = self.own_images.get(&k).map_or(ClientData::Shard(&data_dir), |p| ClientData::Images(p));
        client_round(&Cpu::new(), k, data, &self.client(k), &self.downlink(), &self.update(k), &Quiet)
    }

    /// The server's round on the updates of `answered`.
    fn server_round(
        &self,
        answered: &[usize],
        no_answer: &[usize],
        min_clients: usize,
    ) -> pipeline::Result<pipeline::deploy::ServerRoundResult> {
        let input = ServerRound {
            updates: answered.iter().map(|&k| (k, self.update(k))).collect(),
            no_answer: no_answer.iter().map(|&k| (k, "no answer within 60 s".to_string())).collect::<BTreeMap<_, _>>(),
            min_clients: Some(min_clients),
        };
        server_round(&Cpu::new(), &self.server(), &input, &self.downlink(), &Quiet)
    }

    /// Every round with every client.
    fn run_all(&self, cfg: &ExperimentConfig) {
        server_init(&Cpu::new(), cfg, &cfg.data_dir(None), &self.server(), &self.downlink()).unwrap();
        let all: Vec<usize> = (0..cfg.partition.clients).collect();
        for round in 1..=cfg.rounds {
            for &k in &all {
                let done = self.client_round(cfg, k).unwrap();
                assert_eq!((done.round, done.resent), (round, false));
            }
            let result = self.server_round(&all, &[], all.len()).unwrap();
            assert_eq!((result.round, result.next_round), (round, round < cfg.rounds));
            assert_eq!(self.downlink().exists(), round < cfg.rounds);
            let log = std::fs::read_to_string(self.server().join(pipeline::METRICS_LOG)).unwrap();
            assert_eq!(log.lines().count(), round, "metrics.jsonl has a line per round so far");
        }
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Everything in report.json that does not measure time.
fn results(dir: &Path) -> serde_json::Value {
    let mut report = report_json(dir);
    for round in report["rounds"].as_array_mut().unwrap() {
        round.as_object_mut().unwrap().remove("seconds");
    }
    serde_json::json!({ "rounds": report["rounds"], "final": report["final"], "privacy": report["privacy"] })
}

fn assert_deployed_equals_simulated(name: &str, cfg: &ExperimentConfig) {
    assert_sites_equal_simulated(Sites::new(name), cfg);
}

fn assert_sites_equal_simulated(sites: Sites, cfg: &ExperimentConfig) {
    let name = sites.root.file_name().unwrap().to_string_lossy().into_owned();
    let simulated = temp_dir(&format!("{name}-simulated"));
    run(cfg, &simulated).unwrap();
    sites.run_all(cfg);
    assert_eq!(results(&sites.server()), results(&simulated), "{name}: deployed vs simulated");
    std::fs::remove_dir_all(&simulated).unwrap();
}

#[test]
fn a_deployed_align_fl_run_equals_the_simulation_bit_for_bit() {
    assert_deployed_equals_simulated("deploy-align-fl", &two_rounds());
}

#[test]
fn a_deployed_fedavg_run_equals_the_simulation_bit_for_bit() {
    let mut cfg = two_rounds();
    cfg.strategy = StrategyKind::Fedavg;
    assert_deployed_equals_simulated("deploy-fedavg", &cfg);
}

/// DP-SGD's state (steps, noise stream, clipping) crosses the process boundary exactly: the same
/// model and the same ε after two rounds as in one process.
#[test]
fn a_deployed_dp_sgd_run_equals_the_simulation_bit_for_bit() {
    let mut cfg = two_rounds();
    cfg.privacy.mechanism = Mechanism::DpSgd;
    cfg.privacy.noise = NoiseSource::Reproducible;
    assert_deployed_equals_simulated("deploy-dp-sgd", &cfg);
}

/// A client may train on its own images (an IDX file or a folder of PNGs) instead of its shard of
/// the run's dataset. Given its shard's images as a file (`align-fl data shard`), two clients
/// under DP-SGD (σ calibrated for the file's size) reproduce the simulation bit for bit.
#[test]
fn clients_on_their_shards_as_image_files_reproduce_the_simulation_bit_for_bit() {
    let mut cfg = two_rounds();
    cfg.privacy.mechanism = Mechanism::DpSgd;
    cfg.privacy.noise = NoiseSource::Reproducible;
    let mut sites = Sites::new("deploy-own-images");
    for k in [0, 3] {
        let file = sites.root.join(format!("client-{k}-images.idx"));
        let count = write_client_shard(&cfg, &cfg.data_dir(None), k, &file).unwrap();
        let shard = &pipeline::load_partition(&cfg, &cfg.data_dir(None)).unwrap().clients[k];
        assert_eq!(count, shard.samples.len(), "client 0's file holds its outliers too");
        sites.own_images.insert(k, file);
    }
    assert_sites_equal_simulated(sites, &cfg);
}

/// A client's run trains on one set of images: other images in a later round (here one pixel
/// changed), or images the model cannot take, are refused with the file named.
#[test]
fn a_client_refuses_other_images_mid_run_and_images_of_another_size() {
    let cfg = two_rounds();
    let mut sites = Sites::new("deploy-other-images");
    let file = sites.root.join("client-1-images.idx");
    write_client_shard(&cfg, &cfg.data_dir(None), 1, &file).unwrap();
    sites.own_images.insert(1, file.clone());
    server_init(&Cpu::new(), &cfg, &cfg.data_dir(None), &sites.server(), &sites.downlink()).unwrap();
    let all: Vec<usize> = (0..cfg.partition.clients).collect();
    for &k in &all {
        sites.client_round(&cfg, k).unwrap();
    }
    sites.server_round(&all, &[], all.len()).unwrap();
    let original = std::fs::read(&file).unwrap();
    let mut changed = original.clone();
    let last = changed.len() - 1;
    changed[last] = changed[last].wrapping_add(1);
    std::fs::write(&file, &changed).unwrap();
    let e = sites.client_round(&cfg, 1).unwrap_err().to_string();
    assert!(e.contains("client-state.bin: this client's run started on other training images"), "{e}");
    // The refusal lost nothing: with its images back, the client trains round 2.
    std::fs::write(&file, &original).unwrap();
    let done = sites.client_round(&cfg, 1).unwrap();
    assert_eq!((done.round, done.resent), (2, false));

    let large = sites.root.join("large.idx");
    std::fs::write(&large, data::idx::encode(&data::idx::IdxArray { dims: vec![2, 32, 32], data: vec![0; 2048] }))
        .unwrap();
    let e = client_round(
        &Cpu::new(),
        2,
        ClientData::Images(&large),
        &sites.client(2),
        &sites.downlink(),
        &sites.update(2),
        &Quiet,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("large.idx: holds 32×32 images") && e.contains("resize them to 28×28"), "{e}");
    let e = write_client_shard(&cfg, &cfg.data_dir(None), 5, &large).unwrap_err().to_string();
    assert!(e.contains("client id 5 is out of range"), "{e}");
}

/// The server may train more than one global model on the decoders it receives (its own
/// architecture is its choice, and post-processing of the clients' releases): a second server
/// with a wider latent runs every round on the same update files. A server whose config asks
/// the clients for something else (another client architecture, DP-SGD) leaves each of them out
/// by name and refuses the round.
#[test]
fn a_second_server_trains_its_own_model_on_the_same_updates_and_refuses_another_configs() {
    let cfg = two_rounds();
    let sites = Sites::new("deploy-second-server");
    let cpu = Cpu::new();
    let data = cfg.data_dir(None);
    let mut wider = cfg.clone();
    wider.server.model = Some(pipeline::config::ModelConfig { latent: cfg.model.latent + 2, ..cfg.model.clone() });
    let mut other_clients = cfg.clone();
    other_clients.model.latent += 1;
    let mut dp = cfg.clone();
    dp.privacy.mechanism = Mechanism::DpSgd;
    let second = |name: &str, c: &ExperimentConfig| {
        let dir = sites.root.join(name);
        server_init(&cpu, c, &data, &dir, &sites.root.join("unread-downlink.bin")).unwrap();
        dir
    };
    let (wider_dir, other_dir, dp_dir) = (second("wider", &wider), second("other", &other_clients), second("dp", &dp));
    server_init(&cpu, &cfg, &data, &sites.server(), &sites.downlink()).unwrap();
    let all: Vec<usize> = (0..cfg.partition.clients).collect();
    // Every server reads the same update files; only the first one's downlink reaches the clients.
    let on_all = |dir: &Path, downlink: &Path| {
        let input = ServerRound {
            updates: all.iter().map(|&k| (k, sites.update(k))).collect(),
            no_answer: BTreeMap::new(),
            min_clients: Some(1),
        };
        server_round(&cpu, dir, &input, downlink, &Quiet)
    };
    let unread = sites.root.join("unread-downlink.bin");
    for round in 1..=cfg.rounds {
        for &k in &all {
            sites.client_round(&cfg, k).unwrap();
        }
        assert_eq!(on_all(&sites.server(), &sites.downlink()).unwrap().round, round);
        assert_eq!(on_all(&wider_dir, &unread).unwrap().round, round);
        if round == 1 {
            let e = on_all(&other_dir, &unread).unwrap_err().to_string();
            assert!(
                e.contains("0 valid update(s)") && e.contains("does not fit this run: it sent a decoder from a"),
                "{e}"
            );
            assert!(e.contains(&format!("the config gives client 4 a {}-d latent", cfg.model.latent + 1)), "{e}");
            let e = on_all(&dp_dir, &unread).unwrap_err().to_string();
            assert!(e.contains("client 0: its update does not fit this run: it sent no DP-SGD privacy report"), "{e}");
        }
    }
    let (main, second) = (report_json(&sites.server()), report_json(&wider_dir));
    assert_eq!(second["config"]["server"]["model"]["latent"], cfg.model.latent + 2);
    assert_eq!(second["rounds"].as_array().unwrap().len(), cfg.rounds);
    assert_eq!(second["rounds"][1]["uplink_bytes"], main["rounds"][1]["uplink_bytes"], "the same updates");
    assert_ne!(second["final"]["accuracy"], serde_json::Value::Null);
    assert!(second["rounds"][1]["left_out"].as_array().unwrap().is_empty());
}

/// Under DP-SGD a server whose target is stricter than what the clients spent (here half the ε
/// they were calibrated to) leaves them out rather than report its own target over their ledgers.
#[test]
fn a_server_refuses_ledgers_beyond_its_privacy_target() {
    let mut cfg = tiny();
    cfg.privacy.mechanism = Mechanism::DpSgd;
    let mut strict = cfg.clone();
    strict.privacy.epsilon = cfg.privacy.epsilon / 2.0;
    let sites = Sites::new("deploy-strict-target");
    let cpu = Cpu::new();
    let strict_dir = sites.root.join("strict");
    let unread = sites.root.join("unread-downlink.bin");
    server_init(&cpu, &strict, &cfg.data_dir(None), &strict_dir, &unread).unwrap();
    server_init(&cpu, &cfg, &cfg.data_dir(None), &sites.server(), &sites.downlink()).unwrap();
    let all: Vec<usize> = (0..cfg.partition.clients).collect();
    for &k in &all {
        sites.client_round(&cfg, k).unwrap();
    }
    assert_eq!(sites.server_round(&all, &[], all.len()).unwrap().round, 1, "the ledgers fit their own run");
    let input = ServerRound {
        updates: all.iter().map(|&k| (k, sites.update(k))).collect(),
        no_answer: BTreeMap::new(),
        min_clients: None,
    };
    let e = server_round(&cpu, &strict_dir, &input, &unread, &Quiet).unwrap_err().to_string();
    let target = format!("beyond this run's target of ε = {} at δ = 1e-5", strict.privacy.epsilon);
    assert!(
        e.contains("client 0: its update does not fit this run: it sent a DP-SGD ledger of ε = ")
            && e.contains(&target),
        "{e}"
    );
}

/// A downlink that cannot be written (here its path is a folder) fails `server init` and
/// `server round` without leaving state that refuses the retry; the retried round is the same
/// round, logged once.
#[test]
fn an_unwritable_downlink_fails_init_and_round_and_the_retry_goes_on() {
    let cfg = two_rounds();
    let sites = Sites::new("deploy-unwritable-downlink");
    let cpu = Cpu::new();
    let folder = sites.root.join("a-folder");
    std::fs::create_dir_all(&folder).unwrap();
    let e = server_init(&cpu, &cfg, &cfg.data_dir(None), &sites.server(), &folder).unwrap_err().to_string();
    assert!(e.contains("is not a regular file"), "{e}");
    server_init(&cpu, &cfg, &cfg.data_dir(None), &sites.server(), &sites.downlink()).unwrap();
    let all: Vec<usize> = (0..cfg.partition.clients).collect();
    for &k in &all {
        sites.client_round(&cfg, k).unwrap();
    }
    let input = ServerRound {
        updates: all.iter().map(|&k| (k, sites.update(k))).collect(),
        no_answer: BTreeMap::new(),
        min_clients: None,
    };
    let e = server_round(&cpu, &sites.server(), &input, &folder, &Quiet).unwrap_err().to_string();
    assert!(e.contains("is not a regular file"), "{e}");
    assert_eq!(sites.server_round(&all, &[], all.len()).unwrap().round, 1, "the state still expects round 1");
    let log = std::fs::read_to_string(sites.server().join(pipeline::METRICS_LOG)).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
}

/// An update path that is not a readable file (here a folder; a device or an oversized file
/// alike) leaves its client out, named, instead of stopping the round.
#[test]
fn an_update_that_cannot_be_read_leaves_its_client_out() {
    let cfg = tiny();
    let sites = Sites::new("deploy-unreadable-update");
    server_init(&Cpu::new(), &cfg, &cfg.data_dir(None), &sites.server(), &sites.downlink()).unwrap();
    for k in 0..cfg.partition.clients {
        sites.client_round(&cfg, k).unwrap();
    }
    std::fs::remove_file(sites.update(1)).unwrap();
    std::fs::create_dir(sites.update(1)).unwrap();
    let all: Vec<usize> = (0..cfg.partition.clients).collect();
    let result = sites.server_round(&all, &[], all.len() - 1).unwrap();
    let left = &result.report.main.rounds[0].left_out;
    assert_eq!(left.iter().map(|l| l.client).collect::<Vec<_>>(), [1]);
    assert!(left[0].reason.contains("update-1.bin is not a regular file"), "{}", left[0].reason);
}

#[test]
fn clients_that_fail_or_vanish_are_left_out_and_named() {
    let cfg = two_rounds();
    let sites = Sites::new("deploy-left-out");
    server_init(&Cpu::new(), &cfg, &cfg.data_dir(None), &sites.server(), &sites.downlink()).unwrap();
    for k in 0..4 {
        sites.client_round(&cfg, k).unwrap();
    }
    // Client 3's update is damaged on the way; client 4 never answers.
    let mut damaged = std::fs::read(sites.update(3)).unwrap();
    damaged.truncate(damaged.len() / 2);
    std::fs::write(sites.update(3), damaged).unwrap();
    let state_before = std::fs::read(sites.server().join("server-state.bin")).unwrap();
    let e = sites.server_round(&[0, 1, 2, 3], &[4], 4).unwrap_err();
    assert!(matches!(e, PipelineError::Config(_)), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("3 valid update(s), fewer than the 4 required"), "{text}");
    assert!(
        text.contains("client 3: client update from client 3 does not decode") && text.contains("client 4: no answer"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(sites.server().join("server-state.bin")).unwrap(),
        state_before,
        "a refused round changes nothing"
    );

    let result = sites.server_round(&[0, 1, 2, 3], &[4], 3).unwrap();
    let left: Vec<usize> = result.report.main.rounds[0].left_out.iter().map(|l| l.client).collect();
    assert_eq!(left, [3, 4]);
    assert_eq!(result.report.main.rounds[0].synthetic_samples, 3 * cfg.server.synthetic_samples);
    assert_eq!(results(&sites.server())["rounds"][0]["left_out"][1]["reason"], "no answer within 60 s");
    // Round 2: client 3 (whose state is whole) trains on; client 4, which never trained, cannot
    // join late: it holds no state, which is also what a lost state directory looks like, and a
    // lost privacy ledger must not restart from zero.
    for k in 0..4 {
        assert_eq!(sites.client_round(&cfg, k).unwrap().round, 2);
    }
    let e = sites.client_round(&cfg, 4).unwrap_err().to_string();
    assert!(e.contains("asks for round 2") && e.contains("holds no state"), "{e}");
    let result = sites.server_round(&[0, 1, 2, 3], &[4], 3).unwrap();
    assert!(!result.next_round && !sites.downlink().exists());
    assert_eq!(result.report.main.rounds[1].left_out.iter().map(|l| l.client).collect::<Vec<_>>(), [4]);
    assert!(sites.server().join("align-fl-global.safetensors").is_file());
    let e = sites.server_round(&[0], &[], 1).unwrap_err().to_string();
    assert!(e.contains("has finished its 2 rounds"), "{e}");
}

#[test]
fn a_restarted_client_resends_its_update_and_never_trains_a_round_twice() {
    let cfg = two_rounds();
    let sites = Sites::new("deploy-restart");
    server_init(&Cpu::new(), &cfg, &cfg.data_dir(None), &sites.server(), &sites.downlink()).unwrap();
    let first = sites.client_round(&cfg, 0).unwrap();
    let sent = std::fs::read(sites.update(0)).unwrap();
    std::fs::remove_file(sites.update(0)).unwrap();
    let again = sites.client_round(&cfg, 0).unwrap();
    assert!(!first.resent && again.resent);
    assert_eq!(std::fs::read(sites.update(0)).unwrap(), sent);

    // Another client's state directory, and a state that skips a round, are refused.
    std::fs::rename(sites.client(0), sites.client(1)).unwrap();
    let e = sites.client_round(&cfg, 1).unwrap_err().to_string();
    assert!(e.contains("belongs to client 0, not client 1"), "{e}");
    std::fs::rename(sites.client(1), sites.client(0)).unwrap();
    let e = client_round(
        &Cpu::new(),
        2,
        ClientData::Shard(&cfg.data_dir(None)),
        &sites.client(2),
        &sites.server().join("server-state.bin"),
        &sites.update(2),
        &Quiet,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("server-state.bin") && e.contains("expected \"align-fl/round\" data"), "{e}");
    let e = client_round(
        &Cpu::new(),
        7,
        ClientData::Shard(&cfg.data_dir(None)),
        &sites.client(7),
        &sites.downlink(),
        &sites.update(7),
        &Quiet,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("client id 7 is out of range"), "{e}");
    assert!(server_init(&Cpu::new(), &cfg, &cfg.data_dir(None), &sites.server(), &sites.downlink())
        .unwrap_err()
        .to_string()
        .contains("already holds a server state"));
}

/// A round that scores no FID does not look for Inception (each round is a process of its own,
/// and the evaluation images' statistics cost minutes); the final round does.
#[test]
fn only_the_rounds_that_score_fid_load_inception() {
    let mut cfg = two_rounds();
    cfg.fid.enabled = true;
    cfg.fid.weights = Some(PathBuf::from("no-such-dir/inception.safetensors"));
    let sites = Sites::new("deploy-fid-rounds");
    server_init(&Cpu::new(), &cfg, &cfg.data_dir(None), &sites.server(), &sites.downlink()).unwrap();
    let all: Vec<usize> = (0..cfg.partition.clients).collect();
    let mut notes = Vec::new();
    for _ in 1..=cfg.rounds {
        for &k in &all {
            sites.client_round(&cfg, k).unwrap();
        }
        notes.push(sites.server_round(&all, &[], all.len()).unwrap().report.fid_note.unwrap());
    }
    assert!(notes[0].contains("round 1 of 2 does not score FID"), "{}", notes[0]);
    assert!(notes[1].contains("no-such-dir"), "the final round looks for the weights: {}", notes[1]);
}
