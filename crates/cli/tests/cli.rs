//! End-to-end tests of the `align-fl` binary: the quick run, argument errors and exit codes, the
//! `privacy` and `fid` commands. What a run computes is tested in the `pipeline` crate.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `align-fl args` in the repository, with neither data nor models from the environment or the
/// user's cache.
fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_align-fl"));
    c.args(args).current_dir(repo()).env_remove("ALIGN_FL_DATA").env_remove("ALIGN_FL_MODELS");
    c.env("XDG_CACHE_HOME", std::env::temp_dir().join("align-fl-tests-no-cache"));
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
        "latent-align-fl.svg",
        "metrics.jsonl",
        "align-fl-global.safetensors",
        "fedavg-global.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    std::fs::remove_dir_all(&out).unwrap();
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
    assert!(stderr(&o).contains("align-fl-tests-no-cache/align-fl/models"), "{}", stderr(&o));
    assert!(stderr(&o).contains("Run `align-fl models fetch` once"), "{}", stderr(&o));
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

/// A disk that fills while the report is written: the run fails naming the file and the cause,
/// and no truncated report.json is left (/dev/full answers every write with ENOSPC).
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_fails_the_run_without_leaving_a_truncated_report() {
    let out = temp_dir("full-disk");
    std::os::unix::fs::symlink("/dev/full", out.join("report.json.partial")).unwrap();
    let o = align_fl(&[
        "run",
        "--config",
        "configs/quick.toml",
        "--rounds",
        "1",
        "--local-epochs",
        "1",
        "--server-epochs",
        "1",
        "--compare",
        "none",
        "--no-fid",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "the run should fail");
    let e = stderr(&o);
    assert!(e.contains("report.json.partial") && e.contains("No space left"), "{e}");
    assert!(!out.join("report.json").exists(), "a report was left behind");
    assert!(out.join("align-fl-global.safetensors").is_file(), "the trained model is kept");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn bad_arguments_and_inputs_exit_non_zero_with_the_fix_named() {
    let out = temp_dir("arguments");
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--config", "configs/quick.toml", "--rounds", "1", "--compare", "none"];
        args.extend_from_slice(&["--out", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        align_fl(&args)
    };
    for (extra, want) in [
        (&["--privacy", "dp-sgd,lipschitz"][..], "no per-sample gradient to clip"),
        (&["--privacy", "dpsgd"], "use none, dp-sgd or lipschitz"),
        (&["--compare", "fedsgd"], "--compare: unknown strategy \"fedsgd\""),
        (&["--threads", "0"], "--threads 0"),
        (&["--clipping", "median"], "possible values: fixed, adaptive, paper-median"),
        (&["--data-dir", "/nonexistent"], "align-fl data fetch"),
        (&["--privacy", "dp-sgd", "--epsilon", "0"], "privacy.epsilon is 0"),
    ] {
        let o = run(extra);
        assert!(!o.status.success(), "{extra:?} should fail");
        assert!(stderr(&o).contains(want), "{extra:?}: {} should mention {want}", stderr(&o));
    }
    let o = align_fl(&["reproduce", "--quick", "--only", "fedsgd", "--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown experiment \"fedsgd\""), "{}", stderr(&o));
    for (args, want) in [
        (&["reproduce", "--quick", "--cell", "lcd"][..], "expected KEY/SEED"),
        (&["reproduce", "--quick", "--cell", "lcd/x"], "is not a whole number"),
        (&["reproduce", "--quick", "--cell", "lcd/0", "--no-fid", "--only", "fedavg"], "its experiments are fedavg"),
        (&["reproduce", "--quick", "--cell", "fedavg/4", "--no-fid", "--only", "fedavg"], "seeds are 0 to 0"),
        (&["reproduce", "--first-seed", "18446744073709551615", "--seeds", "3", "--plan", "a"], "must be below"),
        (&["reproduce", "--quick", "--plan", "a", "--collect", "b"], "cannot be used with"),
        // Devices are refused before they are read (reading /dev/zero would never end).
        (&["run", "--config", "/dev/zero"], "/dev/zero is not a regular file"),
        (&["fid", "--real", "/dev/zero", "--fake", "/dev/zero"], "/dev/zero is not a regular file"),
        // A client trains on the run's dataset or on its own images: one of the two.
        (&["client", "round", "--client", "0", "--state", "s", "--downlink", "d", "--update", "u"], "--data-dir"),
        (
            &[
                "client",
                "round",
                "--client",
                "0",
                "--data-dir",
                "data",
                "--images",
                "i",
                "--state",
                "s",
                "--downlink",
                "d",
                "--update",
                "u",
            ],
            "cannot be used with",
        ),
        (
            &["data", "shard", "--config", "configs/quick.toml", "--client", "5", "--out", "x.idx"],
            "client id 5 is out of range",
        ),
    ] {
        let o = align_fl(args);
        assert!(!o.status.success() && stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    let config = out.join("typo.toml");
    std::fs::write(&config, "rounds = 2\nroundz = 3\n").unwrap();
    let o = align_fl(&["run", "--config", config.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("roundz"), "{}", stderr(&o));
    std::fs::remove_dir_all(&out).unwrap();
}

/// `models fetch` offline: a file that is not pytorch-fid's release is refused by name and
/// nothing is written; a verified copy in `--to` is kept and runs find it there.
#[test]
fn models_fetch_refuses_other_files_and_keeps_a_verified_copy() {
    let to = temp_dir("models-fetch");
    let excerpt = repo().join("crates/metrics/tests/fixtures/pytorch-fid-stem.pth");
    let o = align_fl(&["models", "fetch", "--from", excerpt.to_str().unwrap(), "--to", to.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("Conv2d_2a_3x3.conv.weight is missing"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(&to).unwrap().count(), 0, "nothing is written");
    let o = align_fl(&["models", "fetch", "--from", "absent.pth", "--to", to.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("--from absent.pth: no such file"), "{}", stderr(&o));

    let Some(models) = models() else { return };
    std::fs::copy(models.join("inception-2015-12-05.safetensors"), to.join("inception-2015-12-05.safetensors"))
        .unwrap();
    let o = command(&["models", "fetch", "--url", "http://127.0.0.1:9/never-asked"])
        .env("ALIGN_FL_MODELS", &to)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("already present") && text.contains("runs compute FID with it"),
        "{text}"
    );
    std::fs::remove_dir_all(&to).unwrap();
}

#[test]
fn version_names_the_kernels_and_every_command_shows_an_example() {
    let out = align_fl(&["--version"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("CPU kernels: ") && text.contains("on this machine"), "{text}");
    assert!(["AVX-512F on", "AVX2 on", "baseline on"].iter().any(|k| text.contains(k)), "{text}");
    let commands: &[&[&str]] = &[
        &[],
        &["run"],
        &["reproduce"],
        &["fid"],
        &["fid", "weights", "verify"],
        &["privacy", "epsilon"],
        &["privacy", "calibrate"],
        &["data", "fetch"],
        &["data", "verify"],
        &["data", "subset"],
        &["data", "shard"],
        &["client", "round"],
        &["server", "init"],
        &["server", "round"],
    ];
    for args in commands {
        let argv: Vec<&str> = args.iter().copied().chain(["--help"]).collect();
        let out = align_fl(&argv);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && help.contains("Example"), "align-fl {} --help: {help}", args.join(" "));
    }
}
