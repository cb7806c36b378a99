//! End-to-end tests of the `align-fl` binary on the committed subset.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `align-fl args` in the repository, with neither data nor models from the environment.
fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_align-fl"));
    c.args(args).current_dir(repo()).env_remove("ALIGN_FL_DATA").env_remove("ALIGN_FL_MODELS");
    c
}

fn align_fl(args: &[&str]) -> Output {
    command(args).output().expect("the binary runs")
}

/// The Inception weights folder beside the repository, or None (with the reason printed).
fn models() -> Option<PathBuf> {
    let dir = repo().join("../shared/models");
    if dir.join("inception-2015-12-05.safetensors").is_file() {
        Some(dir)
    } else {
        println!("skipped: no Inception weights in {}", dir.display());
        None
    }
}

/// `align-fl` with ALIGN_FL_MODELS set to `models`.
fn align_fl_with_models(args: &[&str], models: &Path) -> Output {
    command(args).env("ALIGN_FL_MODELS", models).output().expect("the binary runs")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("align-fl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

#[test]
fn quick_config_runs_end_to_end_and_beats_fedavg() {
    let out = temp_dir("quick");
    let o = align_fl(&["run", "--config", "configs/quick.toml", "--no-fid", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = report(&out);
    let rounds = r["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 5);
    for key in [
        "round",
        "accuracy",
        "f1",
        "lipschitz_decoder",
        "lipschitz_spectral_bound",
        "lipschitz_pairwise",
        "uplink_bytes",
        "seconds",
    ] {
        assert!(rounds[0].get(key).is_some(), "round record lacks {key}");
    }
    assert!(r["privacy"].is_null());
    assert!(r["final"]["fid"].is_null());
    assert!(r["fid_note"].as_str().unwrap().contains("disabled"));
    let acc = r["final"]["accuracy"].as_f64().unwrap();
    let fedavg = r["baselines"]["fedavg"]["final"]["accuracy"].as_f64().unwrap();
    // Chance is 0.1; on the 300-per-class subset ALIGN-FL reached 0.51 (FedAvg 0.39) when written.
    assert!(acc >= 0.35, "ALIGN-FL accuracy {acc}");
    assert!(acc > fedavg, "ALIGN-FL {acc} vs FedAvg {fedavg}");
    // Decoder-only uploads are smaller than FedAvg's full models.
    assert!(rounds[0]["uplink_bytes"].as_u64() < r["baselines"]["fedavg"]["rounds"][0]["uplink_bytes"].as_u64());
    for f in [
        "report.md",
        "samples-align-fl.png",
        "latent-align-fl.png",
        "align-fl-global.safetensors",
        "fedavg-global.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    std::fs::remove_dir_all(&out).unwrap();
}

/// A tiny run (seconds) used by several tests.
fn tiny(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "--config",
        "configs/quick.toml",
        "--rounds",
        "1",
        "--local-epochs",
        "1",
        "--server-epochs",
        "1",
        "--synthetic-samples",
        "100",
        "--compare",
        "none",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    align_fl(&args)
}

#[test]
fn heterogeneous_config_runs() {
    let out = temp_dir("hetero");
    let o =
        align_fl(&["run", "--config", "configs/heterogeneous.toml", "--rounds", "1", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(report(&out)["final"]["accuracy"].as_f64().unwrap() > 0.1);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let (a, b) = (temp_dir("threads1"), temp_dir("threads2"));
    assert!(tiny(&a, &["--threads", "1"]).status.success());
    assert!(tiny(&b, &["--threads", "2"]).status.success());
    let (ra, rb) = (report(&a), report(&b));
    for key in ["accuracy", "f1", "lipschitz_decoder", "uplink_bytes", "client_loss", "server_loss"] {
        assert_eq!(ra["rounds"][0][key], rb["rounds"][0][key], "{key}");
    }
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

#[test]
fn missing_data_says_how_to_fetch() {
    let out = temp_dir("missing");
    let o = tiny(&out, &["--data-dir", "/nonexistent"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("align-fl data fetch"), "{}", stderr(&o));
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
    let o = tiny(&dir.join("out"), &["--data-dir", data.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("t10k-images-idx3-ubyte.gz") && e.contains("gzip"), "{e}");
    // A valid gzip whose contents differ: checksum mismatch.
    let other = std::fs::read(repo().join("data/subset/fashion-mnist/t10k-images-idx3-ubyte.gz")).unwrap();
    std::fs::write(&victim, other).unwrap();
    let o = tiny(&dir.join("out"), &["--data-dir", data.to_str().unwrap()]);
    assert!(stderr(&o).contains("checksum mismatch"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn impossible_configs_fail_with_the_setting_named() {
    let dir = temp_dir("configs");
    let cases = [
        ("[partition]\nclients = 0\n", "partition.clients is 0"),
        ("[partition]\nclients = 6\n", "only 5 class pairs"),
        ("[partition]\nclass_pairs = [[0, 1], [2, 13], [4, 5], [6, 7], [8, 9]]\n", "outside 0–9"),
        ("[model]\nlatent = 0\n", "latent size is 0"),
        ("rounds = 2\nroundz = 3\n", "roundz"),
    ];
    for (i, (toml, want)) in cases.iter().enumerate() {
        let path = dir.join(format!("c{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let o = align_fl(&["run", "--config", path.to_str().unwrap(), "--out", dir.join("out").to_str().unwrap()]);
        assert!(!o.status.success(), "case {i} should fail");
        assert!(stderr(&o).contains(want), "case {i}: {} should mention {want}", stderr(&o));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn divergence_names_round_and_client() {
    let dir = temp_dir("diverge");
    let path = dir.join("lr.toml");
    let quick = std::fs::read_to_string(repo().join("configs/quick.toml")).unwrap();
    let absurd = quick
        .replace("data_dir = \"../data/subset\"", &format!("data_dir = \"{}\"", repo().join("data/subset").display()))
        .replacen("learning_rate = 1e-3", "learning_rate = 1e30", 1);
    std::fs::write(&path, absurd).unwrap();
    let o = align_fl(&[
        "run",
        "--config",
        path.to_str().unwrap(),
        "--rounds",
        "1",
        "--compare",
        "none",
        "--out",
        dir.join("out").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("round 1, client") && e.contains("non-finite"), "{e}");
    assert!(e.contains("no round completed"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn privacy_commands_print_epsilon_and_sigma() {
    let o = align_fl(&[
        "privacy",
        "epsilon",
        "--sampling-rate",
        "0.0042666667",
        "--noise-multiplier",
        "1.1",
        "--steps",
        "14063",
        "--delta",
        "1e-5",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((v["epsilon"].as_f64().unwrap() - 2.597).abs() < 1e-3, "{v}");
    assert_eq!(v["accountant"], "rdp");
    assert!(v["order"].as_f64().is_some());
    let o = align_fl(&[
        "privacy",
        "calibrate",
        "--target-epsilon",
        "2.597",
        "--delta",
        "1e-5",
        "--sampling-rate",
        "0.0042666667",
        "--steps",
        "14063",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((v["noise_multiplier"].as_f64().unwrap() - 1.1).abs() < 0.01, "{v}");
    assert!(v["epsilon"].as_f64().unwrap() <= 2.597);
    for (args, want) in [
        (
            vec!["epsilon", "--sampling-rate", "1.5", "--noise-multiplier", "1", "--steps", "1", "--delta", "1e-5"],
            "q must lie in (0, 1]",
        ),
        (
            vec!["epsilon", "--sampling-rate", "0.1", "--noise-multiplier", "0", "--steps", "1", "--delta", "1e-5"],
            "σ must be",
        ),
        (
            vec!["epsilon", "--sampling-rate", "0.1", "--noise-multiplier", "1", "--steps", "1", "--delta", "1"],
            "δ must lie",
        ),
        (
            vec![
                "calibrate",
                "--target-epsilon",
                "0.001",
                "--delta",
                "1e-5",
                "--sampling-rate",
                "1",
                "--steps",
                "100000000",
            ],
            "cannot be reached",
        ),
    ] {
        let mut full = vec!["privacy"];
        full.extend(args);
        let o = align_fl(&full);
        assert!(!o.status.success());
        assert!(stderr(&o).contains(want), "{} should mention {want}", stderr(&o));
    }
}

#[test]
fn dp_sgd_run_reports_each_clients_privacy() {
    let out = temp_dir("dp");
    let o = tiny(&out, &["--privacy", "dp-sgd", "--epsilon", "10", "--delta", "1e-5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let p = &report(&out)["privacy"];
    assert_eq!(p["mechanism"], "dp-sgd");
    assert_eq!(p["prior"], "standard-normal");
    assert_eq!(p["guarantee_holds"], true);
    let clients = p["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 5);
    for c in clients {
        let eps = c["epsilon"].as_f64().unwrap();
        // One round of one epoch is the whole budgeted schedule here, so ε is spent to the target.
        assert!(eps <= 10.0 && eps > 9.99, "{c}");
        assert_eq!(c["noise"], "secure");
        assert_eq!(c["sampling"], "poisson");
        assert_eq!(c["clipping"], "adaptive");
        assert!(c["noise_multiplier"].as_f64().unwrap() > 0.0);
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("guarantee holds"), "{md}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn unaccounted_modes_void_the_guarantee_in_words() {
    let out = temp_dir("dp-unaccounted");
    let o = tiny(
        &out,
        &[
            "--privacy",
            "dp-sgd",
            "--noise",
            "reproducible",
            "--sampling",
            "shuffled",
            "--clipping",
            "paper-median",
            "--allow-non-private-prior",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let p = &report(&out)["privacy"];
    assert_eq!(p["guarantee_holds"], false);
    let reasons = p["clients"][0]["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("does NOT hold") && md.contains("Not covered: batches were shuffled"), "{md}");
    let o = tiny(&out, &["--privacy", "dp-sgd", "--epsilon", "0"]);
    assert!(stderr(&o).contains("privacy.epsilon is 0"), "{}", stderr(&o));
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn lipschitz_mode_reports_empirical_privacy_only() {
    let out = temp_dir("lcd");
    let o = tiny(&out, &["--privacy", "lipschitz", "--lambda-lip", "0.1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let p = &report(&out)["privacy"];
    assert_eq!(p["mechanism"], "lipschitz");
    assert!((p["lambda_lip"].as_f64().unwrap() - 0.1).abs() < 1e-6);
    assert_eq!(p["guarantee_holds"], false);
    assert!(p["target_epsilon"].is_null());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("empirical privacy only") && md.contains("client decoders"), "{md}");
    let o = tiny(&out, &["--privacy", "lipschitz", "--lipschitz-at", "encoder"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(report(&out)["privacy"]["lipschitz_at"], "encoder");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("client encoders"), "{md}");
    let o = tiny(&out, &["--privacy", "dp-sgd,lipschitz"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no per-sample gradient to clip"), "{}", stderr(&o));
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn fid_command_scores_identical_sets_zero_reads_pngs_and_refuses_bad_input() {
    let dir = temp_dir("fid");
    // 12 test images of the committed subset, as an IDX file and (the first 3) as PNGs.
    let source = repo().join("data/subset/mnist/t10k-images-idx3-ubyte.gz");
    let all = data::idx::parse(&data::idx::read_decompressed(&source).unwrap(), &source, 3).unwrap();
    let take = |n: usize| data::idx::IdxArray { dims: vec![n, 28, 28], data: all.data[..n * 784].to_vec() };
    let (twelve, three) = (dir.join("twelve.idx"), dir.join("three.idx"));
    std::fs::write(&twelve, data::idx::encode(&take(12))).unwrap();
    std::fs::write(&three, data::idx::encode(&take(3))).unwrap();
    let pngs = dir.join("pngs");
    std::fs::create_dir_all(&pngs).unwrap();
    for i in 0..3 {
        let file = std::fs::File::create(pngs.join(format!("{i}.png"))).unwrap();
        let mut enc = png::Encoder::new(file, 28, 28);
        enc.set_color(png::ColorType::Grayscale);
        enc.write_header().unwrap().write_image_data(&all.data[i * 784..(i + 1) * 784]).unwrap();
    }
    let (twelve, three, pngs) = (twelve.to_str().unwrap(), three.to_str().unwrap(), pngs.to_str().unwrap());

    // Missing weights: the error says where to put them (no models needed for this part).
    let o = align_fl(&["fid", "--real", twelve, "--fake", twelve]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--inception-weights") && stderr(&o).contains("ALIGN_FL_MODELS"), "{}", stderr(&o));
    let o = align_fl(&["fid", "--real", twelve]);
    assert!(!o.status.success() && stderr(&o).contains("--fake"), "{}", stderr(&o));
    let o = align_fl(&["fid", "--real", twelve, "--fake", dir.join("absent.idx").to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("absent.idx"), "{}", stderr(&o));

    let Some(models) = models() else { return };
    let o = align_fl_with_models(&["fid", "weights", "verify"], &models);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = align_fl_with_models(&["fid", "--real", twelve, "--fake", twelve, "--json", "--batch", "5"], &models);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["fid"].as_f64().unwrap().abs() < 1e-6, "{v}");
    assert_eq!((v["n_real"].as_u64(), v["n_fake"].as_u64()), (Some(12), Some(12)));
    assert!(stderr(&o).contains("rank-deficient"), "small sets warn: {}", stderr(&o));
    // The same three images read from PNGs and from IDX give the same features.
    let o = align_fl_with_models(&["fid", "--real", three, "--fake", pngs, "--json"], &models);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["fid"].as_f64().unwrap().abs() < 1e-6, "{v}");
    // Different sets give a positive FID.
    let o = align_fl_with_models(&["fid", "--real", twelve, "--fake", three, "--json"], &models);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["fid"].as_f64().unwrap() > 1.0, "{v}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_reports_fid_of_the_global_decoder() {
    let Some(models) = models() else { return };
    let dir = temp_dir("run-fid");
    // The quick config with a 100-image evaluation set keeps Inception's share small.
    let quick = std::fs::read_to_string(repo().join("configs/quick.toml")).unwrap();
    let cfg = quick
        .replace("eval_parts = 2", "eval_parts = 10")
        .replace("data_dir = \"../data/subset\"", &format!("data_dir = {:?}", repo().join("data/subset")));
    let path = dir.join("fid.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = dir.join("out");
    let args = [
        "run",
        "--config",
        path.to_str().unwrap(),
        "--rounds",
        "2",
        "--local-epochs",
        "1",
        "--server-epochs",
        "1",
        "--synthetic-samples",
        "100",
        "--compare",
        "none",
        "--fid-samples",
        "24",
        "--fid-every",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = align_fl_with_models(&args, &models);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = report(&out);
    let fid = r["final"]["fid"].as_f64().expect("final FID computed");
    assert!(fid.is_finite() && fid > 0.0, "FID {fid}");
    assert!(r["fid_note"].is_null());
    let rounds = r["rounds"].as_array().unwrap();
    assert!(rounds[0]["fid"].as_f64().is_some(), "--fid-every 1 scores round 1");
    assert_eq!(rounds[1]["fid"].as_f64(), Some(fid));
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("FID"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs the tiny experiment with `extra` on the CPU and through wgpu (lavapipe on CPU-only
/// machines), in output folders named after `name`, and checks that they land together: the kernels differ only in summation order, and
/// the device draws the same noise as the CPU. Returns both reports.
#[cfg(feature = "wgpu")]
fn assert_wgpu_agrees_with_cpu(name: &str, extra: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let (cpu_out, gpu_out) = (temp_dir(&format!("{name}-cpu")), temp_dir(&format!("{name}-wgpu")));
    let o = tiny(&cpu_out, &[extra, &["--no-fid"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = tiny(&gpu_out, &[extra, &["--no-fid", "--backend", "wgpu"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let (c, g) = (report(&cpu_out), report(&gpu_out));
    assert_ne!(g["backend"], "cpu");
    let loss = |r: &serde_json::Value| -> Vec<f64> {
        r["rounds"][0]["client_loss"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
    };
    for (k, (a, b)) in loss(&c).iter().zip(loss(&g)).enumerate() {
        assert!((a - b).abs() <= 1e-3 * a.abs(), "{extra:?} client {k} loss: cpu {a} vs wgpu {b}");
    }
    let server = |r: &serde_json::Value| r["rounds"][0]["server_loss"].as_f64().unwrap();
    assert!((server(&c) - server(&g)).abs() <= 1e-3 * server(&c).abs(), "server loss {} vs {}", server(&c), server(&g));
    let acc = |r: &serde_json::Value| r["final"]["accuracy"].as_f64().unwrap();
    assert!((acc(&c) - acc(&g)).abs() <= 0.05, "{extra:?} accuracy cpu {} vs wgpu {}", acc(&c), acc(&g));
    std::fs::remove_dir_all(&cpu_out).unwrap();
    std::fs::remove_dir_all(&gpu_out).unwrap();
    (c, g)
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_backend_runs_and_agrees_with_the_cpu() {
    assert_wgpu_agrees_with_cpu("tiny", &[]);
}

/// DP-SGD through wgpu, with noise keyed from the seed: ghost norms, the fused clip step and the
/// device's Gaussian noise (the CPU's stream, bit for bit) give the CPU's training and spend the
/// same ε.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_dp_sgd_agrees_with_the_cpu_and_spends_the_same_epsilon() {
    let dp = ["--privacy", "dp-sgd", "--epsilon", "10", "--delta", "1e-5", "--noise", "reproducible"];
    let (c, g) = assert_wgpu_agrees_with_cpu("tiny-dp", &dp);
    let spent = |r: &serde_json::Value| -> Vec<f64> {
        r["privacy"]["clients"].as_array().unwrap().iter().map(|c| c["epsilon"].as_f64().unwrap()).collect()
    };
    assert_eq!(spent(&c).len(), 5);
    assert_eq!(spent(&c), spent(&g), "ε per client, cpu vs wgpu");
}

#[test]
fn reproduce_writes_the_table_curves_and_figures_and_resumes() {
    let out = temp_dir("reproduce");
    let args = [
        "reproduce",
        "--quick",
        "--rounds",
        "1",
        "--no-fid",
        "--only",
        "align-fl,dp-decoder,fedavg,lambda",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = align_fl(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    // Rows align-fl, dp-decoder, fedavg; curve λ ∈ {0, 0.01, 0.1, 1}, whose λ = 0 is the align-fl row.
    assert!(stderr(&o).contains("6 experiments, 0 already done"), "{}", stderr(&o));
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("table.json")).unwrap()).unwrap();
    let rows = table["rows"].as_array().unwrap();
    let keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["align-fl", "dp-decoder", "fedavg"]);
    for r in rows {
        let acc = r["accuracy"]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{r}");
        assert!(r["fid"].is_null());
    }
    // The paper's numbers are for the full protocol: a quick run is not compared with them.
    assert!(rows[0]["paper"]["accuracy"].is_null());
    // dec_dp spends its ε but claims no guarantee; the others claim none at all.
    assert!(rows[1]["epsilon_spent"].as_f64().unwrap() > 9.9);
    assert_eq!(rows[1]["guarantee_holds"], false);
    assert!(rows[0]["guarantee_holds"].is_null());
    // FedAvg uploads whole VAEs, ALIGN-FL decoders only.
    assert!(rows[2]["uplink_bytes_per_round"].as_u64() > rows[0]["uplink_bytes_per_round"].as_u64());
    let lambda = table["curves"]["lambda"].as_array().unwrap();
    let xs: Vec<f64> = lambda.iter().map(|p| p["x"].as_f64().unwrap()).collect();
    assert_eq!(xs, [0.0, 0.01, 0.1, 1.0]);
    assert_eq!(lambda[0]["accuracy"], rows[0]["accuracy"]["mean"], "λ = 0 reuses the no-privacy run");
    for f in ["privacy-utility.png", "samples-align-fl.png", "latent-fedavg.png", "outliers-dp-decoder.png"] {
        assert!(out.join("figures").join(f).is_file(), "{f} missing");
    }
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(md.contains("| ALIGN-FL + DP-SGD on the decoder only |") && md.contains("does not hold"), "{md}");
    assert!(md.contains("The paper's columns are empty"), "{md}");

    // Run again: every experiment is reused and the table is the same.
    let o = align_fl(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("6 experiments, 6 already done"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(out.join("table.md")).unwrap(), md);

    let o = align_fl(&["reproduce", "--quick", "--only", "fedsgd", "--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown experiment \"fedsgd\""), "{}", stderr(&o));
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn reproduce_keeps_going_past_a_failed_experiment_and_names_it() {
    // The server's learning rate diverges ALIGN-FL; FedAvg never uses it and finishes.
    let dir = temp_dir("reproduce-fail");
    let path = dir.join("server-lr.toml");
    let quick = std::fs::read_to_string(repo().join("configs/quick.toml")).unwrap();
    let (clients, server) = quick.split_at(quick.find("[server]").unwrap());
    let text = format!("{clients}{}", server.replacen("learning_rate = 1e-3", "learning_rate = 1e30", 1))
        .replace("data_dir = \"../data/subset\"", &format!("data_dir = \"{}\"", repo().join("data/subset").display()));
    std::fs::write(&path, text).unwrap();
    let out = dir.join("out");
    let args = [
        "reproduce",
        "--config",
        path.to_str().unwrap(),
        "--seeds",
        "1",
        "--rounds",
        "1",
        "--no-fid",
        "--only",
        "align-fl,fedavg",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = align_fl(&args);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("1 experiment(s) failed") && e.contains("align-fl seed 0: align-fl: round 1, server"), "{e}");
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(md.contains("## Failed experiments") && md.contains("No run of this row finished"), "{md}");
    assert!(md.contains(&format!("Made by `align-fl reproduce --config {}", path.display())), "{md}");
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("table.json")).unwrap()).unwrap();
    assert!(table["rows"][0]["accuracy"].is_null());
    assert!(table["rows"][1]["accuracy"]["mean"].as_f64().is_some(), "FedAvg still ran");
    assert!(out.join("figures/samples-fedavg.png").is_file() && !out.join("figures/samples-align-fl.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
