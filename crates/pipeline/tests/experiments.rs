//! One experiment through the library: reports, privacy claims, errors that name their cause,
//! FID, and the GPU backend against the CPU.

mod common;

use common::*;
use federation::PriorKind;
use pipeline::config::FidConfig;
use pipeline::report::PrivacyReport;
use pipeline::{ExperimentConfig, Mechanism, PipelineError, Quiet};
use privacy::{ClippingRule, NoiseSource, Sampling};
use vae::PenaltyTarget;

#[test]
fn heterogeneous_config_runs_and_writes_its_figures() {
    let out = temp_dir("hetero");
    let mut cfg = config("heterogeneous.toml");
    cfg.rounds = 1;
    cfg.fid.enabled = false;
    let report = run(&cfg, &out).unwrap();
    assert!(report.main.final_metrics.accuracy > 0.1);
    for f in &report.main.figures {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert_eq!(
        report.main.figures,
        ["samples-align-fl.png", "latent-align-fl.png", "latent-align-fl.svg", "outliers-align-fl.png"]
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let (a, b) = (temp_dir("threads1"), temp_dir("threads2"));
    let on = |threads: usize, out: &std::path::Path| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| run(&tiny(), out).unwrap())
    };
    let (ra, rb) = (on(1, &a), on(2, &b));
    assert_eq!((ra.threads, rb.threads), (1, 2));
    let (x, y) = (&ra.main.rounds[0], &rb.main.rounds[0]);
    assert_eq!((x.accuracy, x.f1, x.lipschitz_decoder), (y.accuracy, y.f1, y.lipschitz_decoder));
    assert_eq!((&x.client_loss, x.server_loss, x.uplink_bytes), (&y.client_loss, y.server_loss, y.uplink_bytes));
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

#[test]
fn missing_data_says_how_to_fetch() {
    let out = temp_dir("missing");
    let cfg = tiny();
    let e =
        pipeline::run_experiment(&tensor_kernels::Cpu::new(), &cfg, "/nonexistent".as_ref(), &out, &pipeline::Quiet)
            .unwrap_err();
    assert!(matches!(e, PipelineError::Data(_)), "{e:?}");
    assert!(e.to_string().contains("align-fl data fetch"), "{e}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn corrupt_and_mismatched_data_files_are_named() {
    let dir = temp_dir("corrupt");
    let data = dir.join("data");
    // A copy of the subset with one file truncated.
    for ds in ["mnist", "fashion-mnist"] {
        std::fs::create_dir_all(data.join(ds)).unwrap();
        for f in std::fs::read_dir(repo().join("data/subset").join(ds)).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, data.join(ds).join(f.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(repo().join("data/subset/SHA256SUMS"), data.join("SHA256SUMS")).unwrap();
    let victim = data.join("mnist/t10k-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let cfg = ExperimentConfig { data_dir: Some(data.clone()), ..tiny() };
    let e = run(&cfg, &dir.join("out")).unwrap_err().to_string();
    assert!(e.contains("t10k-images-idx3-ubyte.gz") && e.contains("gzip"), "{e}");
    // A valid gzip whose contents differ: checksum mismatch.
    let other = std::fs::read(repo().join("data/subset/fashion-mnist/t10k-images-idx3-ubyte.gz")).unwrap();
    std::fs::write(&victim, other).unwrap();
    let e = run(&cfg, &dir.join("out")).unwrap_err().to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn impossible_config_files_fail_with_the_setting_named() {
    let dir = temp_dir("configs");
    let cases = [
        ("[partition]\nclients = 0\n", "partition.clients is 0"),
        ("[partition]\nclients = 6\n", "only 5 class pairs"),
        ("[partition]\nclass_pairs = [[0, 1], [2, 13], [4, 5], [6, 7], [8, 9]]\n", "outside 0–9"),
        ("[model]\nlatent = 0\n", "latent size is 0"),
        ("rounds = 2\nroundz = 3\n", "roundz"),
        ("[privacy]\nmechanism = \"dp-sgd,lipschitz\"\n", "no per-sample gradient to clip"),
        ("[privacy]\nmechanism = \"dp-sgd\"\nepsilon = 0\n", "privacy.epsilon is 0"),
    ];
    for (i, (toml, want)) in cases.iter().enumerate() {
        let path = dir.join(format!("c{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let e = match ExperimentConfig::load(&path) {
            Err(e) => e,
            Ok(cfg) => cfg.validate().unwrap_err(),
        };
        assert!(e.to_string().contains(want), "case {i}: {e} should mention {want}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn divergence_names_round_and_client_and_what_is_kept() {
    let out = temp_dir("diverge");
    let mut cfg = tiny();
    cfg.client.learning_rate = 1e30;
    let e = run(&cfg, &out).unwrap_err();
    assert!(matches!(e, PipelineError::Training { strategy: "align-fl", .. }), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("round 1, client") && e.contains("non-finite"), "{e}");
    assert!(e.contains("no round completed"), "{e}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn dp_sgd_run_reports_each_clients_privacy() {
    let out = temp_dir("dp");
    let mut cfg = tiny();
    cfg.privacy.mechanism = Mechanism::DpSgd;
    let report = run(&cfg, &out).unwrap();
    let Some(PrivacyReport::DpSgd { prior, guarantee_holds, clients, release, training_images_shown, .. }) =
        &report.privacy
    else {
        panic!("{:?}", report.privacy)
    };
    assert_eq!((*prior, *guarantee_holds, clients.len()), (PriorKind::StandardNormal, true, 5));
    // One model saw each client's data: the release is that training.
    for (r, c) in release.iter().zip(clients) {
        assert_eq!((r.trainings, r.epsilon, r.delta), (1, c.epsilon, c.delta));
    }
    // Clients release no un-noised loss under DP-SGD.
    assert!(report.main.rounds[0].client_loss.iter().all(Option::is_none));
    // Nothing computed from raw training images is released under DP-SGD.
    assert!(report.main.outliers.is_none());
    assert!(!training_images_shown && !out.join("outliers-align-fl.png").exists());
    assert!(!report.main.figures.iter().any(|f| f.starts_with("outliers")), "{:?}", report.main.figures);
    for c in clients {
        // One round of one epoch is the whole budgeted schedule here, so ε is spent to the target.
        assert!(c.epsilon <= 10.0 && c.epsilon > 9.99, "{c:?}");
        assert_eq!((c.noise, c.sampling, c.clipping), (NoiseSource::Secure, Sampling::Poisson, ClippingRule::Adaptive));
        assert!(c.noise_multiplier > 0.0);
    }
    let json = report_json(&out);
    assert_eq!(json["privacy"]["mechanism"], "dp-sgd");
    assert_eq!(json["privacy"]["clients"][0]["accountant"], "rdp");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("guarantee holds") && md.contains("| rdp | adaptive |"), "{md}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_dp_run_with_a_baseline_states_the_composed_release_per_client() {
    let out = temp_dir("dp-baseline");
    let mut cfg = tiny();
    cfg.privacy.mechanism = Mechanism::DpSgd;
    cfg.privacy.epsilon = 1.0;
    cfg.compare = vec![pipeline::StrategyKind::Fedavg];
    let report = run(&cfg, &out).unwrap();
    let Some(PrivacyReport::DpSgd { release, clients, guarantee_holds: true, .. }) = &report.privacy else {
        panic!("{:?}", report.privacy)
    };
    for (r, c) in release.iter().zip(clients) {
        // Two models trained on the same data: more than one model's ε, at most the sum.
        assert_eq!(r.trainings, 2);
        assert!(r.epsilon > c.epsilon + 0.1 && r.epsilon <= 2.0 * c.epsilon + 1e-9, "{r:?} vs {c:?}");
    }
    let total = release.iter().map(|r| r.epsilon).fold(0.0, f64::max);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let sentence = format!("every client's guarantee holds: ({total:.4}, 1e-5)-DP for everything this run writes");
    assert!(md.contains(&sentence) && md.contains("2 model(s)"), "{md}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn training_images_under_dp_only_when_asked_and_then_no_guarantee() {
    let out = temp_dir("dp-images");
    let mut cfg = tiny();
    cfg.privacy.mechanism = Mechanism::DpSgd;
    cfg.privacy.show_training_images = true;
    let report = run(&cfg, &out).unwrap();
    let Some(PrivacyReport::DpSgd { guarantee_holds: false, training_images_shown: true, .. }) = &report.privacy else {
        panic!("{:?}", report.privacy)
    };
    assert!(out.join("outliers-align-fl.png").is_file() && report.main.outliers.is_some());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("does NOT hold") && md.contains("raw training images"), "{md}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn unaccounted_modes_void_the_guarantee_in_words() {
    let out = temp_dir("dp-unaccounted");
    let mut cfg = tiny();
    let dp = &mut cfg.privacy;
    dp.mechanism = Mechanism::DpSgd;
    dp.noise = NoiseSource::Reproducible;
    dp.sampling = Sampling::Shuffled;
    dp.clipping = ClippingRule::PaperMedian;
    dp.allow_non_private_prior = true;
    let report = run(&cfg, &out).unwrap();
    let Some(PrivacyReport::DpSgd { prior, guarantee_holds: false, clients, .. }) = &report.privacy else {
        panic!("{:?}", report.privacy)
    };
    assert_eq!(*prior, PriorKind::Gmm);
    assert_eq!(clients[0].reasons.len(), 4, "{:?}", clients[0].reasons);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("does NOT hold") && md.contains("Not covered: batches were shuffled"), "{md}");
    assert!(md.contains("prior gmm (fitted on private latents)"), "{md}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn lipschitz_mode_reports_empirical_privacy_only() {
    let out = temp_dir("lcd");
    let mut cfg = tiny();
    cfg.privacy.mechanism = Mechanism::Lipschitz;
    let report = run(&cfg, &out).unwrap();
    assert!(matches!(
        report.privacy,
        Some(PrivacyReport::Lipschitz { lambda_lip, lipschitz_at: PenaltyTarget::Decoder, .. }) if lambda_lip == 0.1
    ));
    let json = report_json(&out);
    assert_eq!(json["privacy"]["mechanism"], "lipschitz");
    assert!(json["privacy"]["target_epsilon"].is_null() && json["privacy"]["clients"].is_null());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("empirical privacy only") && md.contains("client decoders"), "{md}");
    cfg.privacy.lipschitz_at = PenaltyTarget::Encoder;
    run(&cfg, &out).unwrap();
    assert_eq!(report_json(&out)["privacy"]["lipschitz_at"], "encoder");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("client encoders"), "{md}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_run_without_weights_skips_fid_and_says_why() {
    let out = temp_dir("no-weights");
    let mut cfg = tiny();
    cfg.fid.enabled = true;
    cfg.fid.weights = Some(out.join("absent.safetensors"));
    let report = run(&cfg, &out).unwrap();
    assert!(report.main.final_metrics.fid.is_none());
    let note = report.fid_note.unwrap();
    assert!(note.contains("absent.safetensors") && note.contains("--inception-weights"), "{note}");
    assert!(note.contains("`align-fl models fetch`"), "{note}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn run_reports_fid_of_the_global_decoder() {
    let Some(models) = models() else { return };
    let out = temp_dir("run-fid");
    let mut cfg = tiny_with_fid(models);
    cfg.rounds = 2;
    cfg.fid.every = 1;
    let report = run(&cfg, &out).unwrap();
    let fid = report.main.final_metrics.fid.expect("final FID computed");
    assert!(fid.is_finite() && fid > 0.0, "FID {fid}");
    assert!(report.fid_note.is_none());
    assert!(report.main.rounds[0].fid.is_some(), "fid.every = 1 scores round 1");
    assert_eq!(report.main.rounds[1].fid, Some(fid));
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("FID"));
    std::fs::remove_dir_all(&out).unwrap();
}

/// Runs the tiny experiment with `edit` on the CPU and through wgpu (lavapipe on CPU-only
/// machines) and checks that they land together: the kernels differ only in summation order,
/// and the device draws the same noise as the CPU. Returns both reports.
#[cfg(feature = "wgpu")]
fn assert_wgpu_agrees_with_cpu(name: &str, edit: fn(&mut ExperimentConfig)) -> (pipeline::Report, pipeline::Report) {
    let (cpu_out, gpu_out) = (temp_dir(&format!("{name}-cpu")), temp_dir(&format!("{name}-wgpu")));
    let mut cfg = tiny();
    edit(&mut cfg);
    let c = run(&cfg, &cpu_out).unwrap();
    let g = run_on(&tensor_kernels::cube::Wgpu::default_device(), &cfg, &gpu_out).unwrap();
    assert_ne!(g.backend, "cpu");
    let (rc, rg) = (&c.main.rounds[0], &g.main.rounds[0]);
    for (k, (a, b)) in rc.client_loss.iter().zip(&rg.client_loss).enumerate() {
        match (a, b) {
            (Some(a), Some(b)) => {
                assert!((a - b).abs() <= 1e-3 * a.abs(), "{name} client {k} loss: cpu {a} vs wgpu {b}")
            }
            (None, None) => {}
            _ => panic!("{name} client {k}: one backend reported a loss, the other none"),
        }
    }
    let (sc, sg) = (rc.server_loss.unwrap(), rg.server_loss.unwrap());
    assert!((sc - sg).abs() <= 1e-3 * sc.abs(), "server loss {sc} vs {sg}");
    let (ac, ag) = (c.main.final_metrics.accuracy, g.main.final_metrics.accuracy);
    assert!((ac - ag).abs() <= 0.05, "{name} accuracy cpu {ac} vs wgpu {ag}");
    std::fs::remove_dir_all(&cpu_out).unwrap();
    std::fs::remove_dir_all(&gpu_out).unwrap();
    (c, g)
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_backend_runs_and_agrees_with_the_cpu() {
    assert_wgpu_agrees_with_cpu("tiny", |_| {});
}

/// DP-SGD through wgpu, with noise keyed from the seed: ghost norms, the fused clip step and the
/// device's Gaussian noise (the CPU's stream, bit for bit) give the CPU's training and spend the
/// same ε.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_dp_sgd_agrees_with_the_cpu_and_spends_the_same_epsilon() {
    let (c, g) = assert_wgpu_agrees_with_cpu("tiny-dp", |cfg| {
        cfg.privacy.mechanism = Mechanism::DpSgd;
        cfg.privacy.noise = NoiseSource::Reproducible;
    });
    let spent = |r: &pipeline::Report| -> Vec<privacy::PrivacySpent> {
        match &r.privacy {
            Some(PrivacyReport::DpSgd { clients, .. }) => clients.clone(),
            other => panic!("{other:?}"),
        }
    };
    let (sc, sg) = (spent(&c), spent(&g));
    assert_eq!(sc.len(), 5);
    for (k, (a, b)) in sc.iter().zip(&sg).enumerate() {
        assert_eq!(a.epsilon, b.epsilon, "client {k}'s ε, cpu vs wgpu");
        // Clients release no loss under DP-SGD; their adaptive clipping threshold follows their
        // whole training, so it shows the two backends trained alike.
        let (ca, cb) = (a.final_clip_norm, b.final_clip_norm);
        assert!((ca - cb).abs() <= 1e-3 * ca, "client {k}'s final clip norm: cpu {ca} vs wgpu {cb}");
    }
    assert!(c.main.rounds[0].client_loss.iter().all(Option::is_none), "no client loss is released under DP-SGD");
}

/// Watches a run and reads `metrics.jsonl` whenever a round finishes: the round's line must
/// already be in the file (appended and flushed before the run moves on).
struct LogReader {
    out: std::path::PathBuf,
    seen: std::sync::Mutex<Vec<(String, usize)>>,
}

/// One strategy's rounds, heard by the [`LogReader`].
struct RoundSink<'a>(&'a LogReader);

impl metrics::FeatureProgress for LogReader {
    fn images_done(&self, _what: &str, _done: usize, _total: usize) {}
}

impl federation::Progress for RoundSink<'_> {}

impl pipeline::RoundProgress for RoundSink<'_> {
    fn round_finished(&self, strategy: pipeline::StrategyKind, record: &pipeline::report::RoundRecord) {
        let text = std::fs::read_to_string(self.0.out.join(pipeline::METRICS_LOG)).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["strategy"], strategy.as_str());
        assert_eq!(last["round"], record.round);
        assert_eq!(last["accuracy"], record.accuracy);
        self.0.seen.lock().unwrap().push((strategy.as_str().to_string(), text.lines().count()));
    }
    fn finished(&self) {}
}

impl pipeline::Observer for LogReader {
    fn note(&self, _line: &str) {}
    fn strategy_started(&self, _: pipeline::StrategyKind, _: usize, _: usize) -> Box<dyn pipeline::RoundProgress + '_> {
        Box::new(RoundSink(self))
    }
}

#[test]
fn metrics_jsonl_holds_each_round_before_the_run_moves_on() {
    let out = temp_dir("metrics-log");
    let mut cfg = tiny();
    cfg.rounds = 2;
    cfg.compare = vec![pipeline::StrategyKind::Fedavg];
    let reader = LogReader { out: out.clone(), seen: Default::default() };
    pipeline::run_experiment(&tensor_kernels::Cpu::new(), &cfg, &cfg.data_dir(None), &out, &reader).unwrap();
    let seen = reader.seen.lock().unwrap().clone();
    let expected: Vec<(String, usize)> =
        [("align-fl", 1), ("align-fl", 2), ("fedavg", 3), ("fedavg", 4)].map(|(s, n)| (s.to_string(), n)).into();
    assert_eq!(seen, expected);
    std::fs::remove_dir_all(&out).unwrap();
}

/// `align-fl fid --run`: a run made with FID off, or on without the Inception weights, gets from
/// its saved global model the FID a run with FID on prints, bit for bit.
#[test]
fn fid_added_to_a_finished_run_is_the_fid_the_run_would_have_scored() {
    let Some(models) = models() else { return };
    let out = temp_dir("add-fid");
    let cpu = tensor_kernels::Cpu::new();
    let cfg = tiny_with_fid(models.clone());
    let scored = run(&cfg, &out.join("direct")).unwrap();
    plant_hard_float(&out.join("direct"));
    let fid_off = ExperimentConfig { fid: FidConfig { enabled: false, ..cfg.fid.clone() }, ..cfg.clone() };
    let no_weights =
        ExperimentConfig { fid: FidConfig { weights: Some(out.join("absent")), ..cfg.fid.clone() }, ..cfg };
    for (name, late_cfg) in [("off", fid_off), ("no-weights", no_weights)] {
        let late = out.join(name);
        assert!(run(&late_cfg, &late).unwrap().main.final_metrics.fid.is_none());
        plant_hard_float(&late);
        let report = pipeline::add_fid_to_finished_run(&cpu, &late, None, Some(&models), &Quiet).unwrap();
        assert_eq!(report.main.final_metrics.fid, scored.main.final_metrics.fid, "{name}");
        assert!(scored.main.final_metrics.fid.is_some());
        // The whole report.json as the FID run wrote it, to the last digit of every number read
        // back and written again; the clock and the paths aside.
        assert_eq!(
            report_text_but_clock_and_paths(&late),
            report_text_but_clock_and_paths(&out.join("direct")),
            "{name}"
        );
        assert!(report_json(&late)["fid_note"].is_null());
        let e = pipeline::add_fid_to_finished_run(&cpu, &late, None, Some(&models), &Quiet).unwrap_err();
        assert!(e.to_string().contains("has its FID already"), "{e}");
    }
    std::fs::remove_dir_all(&out).unwrap();
}

/// Sets the first `lipschitz_decoder` of `dir`'s report.json to 221.78185125213366, which a
/// JSON parser without exact float parsing reads one ulp off (then writes 221.7818512521337).
fn plant_hard_float(dir: &std::path::Path) {
    let file = dir.join("report.json");
    let text = std::fs::read_to_string(&file).unwrap();
    let at = text.find("\"lipschitz_decoder\": ").unwrap() + "\"lipschitz_decoder\": ".len();
    let end = at + text[at..].find([',', '\n']).unwrap();
    std::fs::write(&file, format!("{}221.78185125213366{}", &text[..at], &text[end..])).unwrap();
}

/// The lines of `dir`'s report.json but those naming a time, a folder or the Inception weights.
fn report_text_but_clock_and_paths(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    let varying = ["\"seconds\"", "wall_seconds\"", "\"checkpoint\"", "\"weights\"", "\"data_dir\""];
    text.lines().filter(|l| !varying.iter().any(|k| l.contains(k))).map(str::to_string).collect()
}

/// `report` as JSON without what depends on the clock or the folder.
fn timeless(report: &pipeline::Report) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for key in ["seconds", "wall_seconds", "total_wall_seconds", "checkpoint"] {
                    map.remove(key);
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(report).unwrap();
    strip(&mut v);
    v
}

#[test]
fn runs_sharing_clients_report_what_each_reports_alone() {
    let mut configs = [tiny(), tiny(), tiny()];
    configs[1].server.synthetic_samples = 150;
    configs[1].server.server_epochs = 2;
    configs[2].server.model = Some(pipeline::config::ModelConfig { latent: 3, ..configs[2].model.clone() });
    let root = temp_dir("sharing");
    let runs: Vec<_> = configs.iter().enumerate().map(|(k, c)| (c.clone(), root.join(format!("shared-{k}")))).collect();
    let cpu = tensor_kernels::Cpu::new();
    let data_dir = configs[0].data_dir(None);
    let partition = pipeline::load_partition(&configs[0], &data_dir).unwrap();
    let fid = pipeline::Fid::prepare(&cpu, &configs[0], &partition, &Quiet).unwrap();
    let prepared = pipeline::Prepared { data_dir: &data_dir, partition: &partition, fid: &fid };
    let shared = pipeline::run_sharing_clients(&cpu, &runs, &prepared, &Quiet).unwrap();
    for (k, (cfg, _)) in runs.iter().enumerate() {
        let alone = run(cfg, &root.join(format!("alone-{k}"))).unwrap();
        assert_eq!(timeless(&shared[k]), timeless(&alone), "run {k}");
        assert!(shared[k].main.wall_seconds > 0.0 && shared[k].total_wall_seconds == shared[k].main.wall_seconds);
        assert!(root.join(format!("shared-{k}/report.md")).is_file());
    }
    assert_ne!(shared[0].main.final_metrics.accuracy, shared[2].main.final_metrics.accuracy);

    // Clients that would train otherwise, or a baseline that sends them its model, are refused.
    for edit in [
        |c: &mut ExperimentConfig| c.client.local_epochs = 2,
        |c: &mut ExperimentConfig| c.compare = vec![pipeline::StrategyKind::Fedavg],
    ] {
        let mut other = tiny();
        edit(&mut other);
        let runs = [(tiny(), root.join("a")), (other, root.join("b"))];
        let e = pipeline::run_sharing_clients(&cpu, &runs, &prepared, &Quiet).unwrap_err().to_string();
        assert!(e.contains("cannot share clients") && e.contains("differ only in [server] and [fid]"), "{e}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}
