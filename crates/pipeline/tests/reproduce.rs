//! The paper reproduction through the library: the table, the curves and the figures, resuming
//! from finished cells, and going on past a failed experiment.

mod common;

use common::*;
use pipeline::reproduce::{reproduce, Action, Curve, Experiment, Row, Settings};
use pipeline::{PipelineError, Quiet};

fn table_json(out: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("table.json")).unwrap()).unwrap()
}

/// Counts the cells a run of `reproduce` ran (those with a fresh `cell.json`).
fn cell_files(out: &std::path::Path) -> Vec<std::time::SystemTime> {
    let mut times = Vec::new();
    for key in std::fs::read_dir(out.join("cells")).unwrap() {
        for seed in std::fs::read_dir(key.unwrap().path()).unwrap() {
            let cell = seed.unwrap().path().join("cell.json");
            times.push(std::fs::metadata(cell).unwrap().modified().unwrap());
        }
    }
    times.sort();
    times
}

#[test]
fn reproduce_writes_the_table_curves_and_figures_and_resumes() {
    let out = temp_dir("reproduce");
    let settings = Settings {
        quick: true,
        seeds: 0..1,
        rounds: Some(1),
        fid: false,
        data_dir: Some(repo().join("data/subset")),
        only: Some(vec![
            Experiment::Row(Row::AlignFl),
            Experiment::Row(Row::DpDecoder),
            Experiment::Row(Row::Fedavg),
            Experiment::Curve(Curve::Lambda),
        ]),
        ..Settings::new(out.clone())
    };
    reproduce(&tensor_kernels::Cpu::new(), &settings, &Quiet).unwrap();
    // Rows align-fl, dp-decoder, fedavg; curve λ ∈ {0, 0.01, 0.1, 1, 3, 10}, whose λ = 0 is the
    // align-fl row and λ = 0.1 the LCD row's run, which the table shows as that row too.
    let cells = cell_files(&out);
    assert_eq!(cells.len(), 8);
    let table = table_json(&out);
    let rows = table["rows"].as_array().unwrap();
    let keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["align-fl", "dp-decoder", "lcd", "fedavg"]);
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
    assert!(rows[3]["uplink_bytes_per_round"].as_u64() > rows[0]["uplink_bytes_per_round"].as_u64());
    let lambda = table["curves"]["lambda"].as_array().unwrap();
    let xs: Vec<f64> = lambda.iter().map(|p| p["x"].as_f64().unwrap()).collect();
    assert_eq!(xs, [0.0, 0.01, 0.1, 1.0, 3.0, 10.0]);
    assert_eq!(lambda[0]["accuracy"], rows[0]["accuracy"], "λ = 0 reuses the no-privacy run");
    assert_eq!(lambda[5]["seeds"], 1);
    for f in [
        "privacy-utility.png",
        "privacy-utility.svg",
        "samples-align-fl.png",
        "latent-fedavg.png",
        "latent-fedavg.svg",
        "outliers-fedavg.png",
    ] {
        assert!(out.join("figures").join(f).is_file(), "{f} missing");
    }
    // A DP-SGD row writes no figure of raw training images.
    assert!(!out.join("figures/outliers-dp-decoder.png").exists());
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(md.contains("| ALIGN-FL + DP-SGD on the decoder only |") && md.contains("does not hold"), "{md}");
    assert!(md.contains("The paper's columns are empty"), "{md}");
    assert!(md.contains("--only align-fl,dp-decoder,lcd,fedavg,lambda --no-fid"), "{md}");

    // Run again: every experiment is reused (no cell.json rewritten) and the table is the same.
    reproduce(&tensor_kernels::Cpu::new(), &settings, &Quiet).unwrap();
    assert_eq!(cell_files(&out), cells);
    assert_eq!(std::fs::read_to_string(out.join("table.md")).unwrap(), md);
    // One experiment asked for alone keeps the rest of the folder's table: the same table.
    let fedavg = Settings { only: Some(vec![Experiment::Row(Row::Fedavg)]), ..settings };
    reproduce(&tensor_kernels::Cpu::new(), &fedavg, &Quiet).unwrap();
    assert_eq!(cell_files(&out), cells);
    assert_eq!(std::fs::read_to_string(out.join("table.md")).unwrap(), md);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn reproduce_keeps_going_past_a_failed_experiment_and_names_it() {
    // The server's learning rate diverges ALIGN-FL; FedAvg never uses it and finishes.
    let dir = temp_dir("reproduce-fail");
    let mut cfg = config("quick.toml");
    cfg.server.learning_rate = 1e30;
    let path = dir.join("server-lr.toml");
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    let out = dir.join("out");
    let settings = Settings {
        config: Some(path.clone()),
        seeds: 0..1,
        rounds: Some(1),
        fid: false,
        only: Some(vec![Experiment::Row(Row::AlignFl), Experiment::Row(Row::Fedavg)]),
        ..Settings::new(out.clone())
    };
    let e = reproduce(&tensor_kernels::Cpu::new(), &settings, &Quiet).unwrap_err();
    let PipelineError::ExperimentsFailed(failures) = &e else { panic!("{e:?}") };
    assert_eq!(failures.len(), 1);
    assert!(failures[0].starts_with("align-fl seed 0: align-fl: round 1, server"), "{e}");
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(md.contains("## Experiments missing from the table") && md.contains("No run of this row finished"), "{md}");
    assert!(md.contains(&format!("Made by `align-fl reproduce --config {}", path.display())), "{md}");
    let table = table_json(&out);
    assert!(table["rows"][0]["accuracy"].is_null());
    assert!(table["rows"][1]["accuracy"]["mean"].as_f64().is_some(), "FedAvg still ran");
    assert!(out.join("figures/samples-fedavg.png").is_file() && !out.join("figures/samples-align-fl.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The cluster path: `plan.txt` lists one command per unfinished cell, each cell runs alone, and
/// `--collect` builds the same table as a single-process reproduction, bit for bit.
#[test]
fn a_planned_reproduction_runs_cell_by_cell_and_collects_the_same_table() {
    let out = temp_dir("reproduce-plan");
    let cpu = tensor_kernels::Cpu::new();
    let base = Settings {
        quick: true,
        seeds: 0..1,
        rounds: Some(1),
        fid: false,
        data_dir: Some(repo().join("data/subset")),
        only: Some(vec![Experiment::Row(Row::AlignFl), Experiment::Row(Row::Fedavg)]),
        ..Settings::new(out.clone())
    };
    let with = |action: Action| Settings { action, ..base.clone() };
    let commands = |out: &std::path::Path| -> Vec<String> {
        let text = std::fs::read_to_string(out.join("plan.txt")).unwrap();
        text.lines().filter(|l| !l.starts_with('#')).map(str::to_string).collect()
    };
    reproduce(&cpu, &with(Action::Plan), &Quiet).unwrap();
    let planned = commands(&out);
    assert_eq!(planned.len(), 2, "{planned:?}");
    assert!(planned[0].ends_with("--cell align-fl/0") && planned[1].ends_with("--cell fedavg/0"), "{planned:?}");
    for c in &planned {
        assert!(
            c.starts_with("align-fl reproduce --quick") && c.contains("--no-fid --out") && c.contains("--data-dir")
        );
    }
    assert!(!out.join("cells").exists(), "planning runs nothing");
    let text = std::fs::read_to_string(out.join("plan.txt")).unwrap();
    assert!(text.contains(&format!("--no-fid --collect {}\n", out.display())), "{text}");

    let e = reproduce(&cpu, &with(Action::Collect), &Quiet).unwrap_err();
    assert!(matches!(e, PipelineError::ExperimentsUnfinished(ref v) if v.len() == 2), "{e}");
    assert!(e.to_string().contains("--cell fedavg/0"), "{e}");

    reproduce(&cpu, &with(Action::Cell { key: "fedavg".into(), seed: 0 }), &Quiet).unwrap();
    assert!(out.join("cells/fedavg/seed-0/cell.json").is_file() && !out.join("cells/align-fl").exists());
    reproduce(&cpu, &with(Action::Plan), &Quiet).unwrap();
    assert_eq!(commands(&out), planned[..1], "only the unfinished cell is planned again");
    reproduce(&cpu, &with(Action::Cell { key: "align-fl".into(), seed: 0 }), &Quiet).unwrap();
    reproduce(&cpu, &with(Action::Collect), &Quiet).unwrap();

    let e = reproduce(&cpu, &with(Action::Cell { key: "lcd".into(), seed: 0 }), &Quiet).unwrap_err().to_string();
    assert!(
        e.contains("--cell lcd/0: this plan has no experiment \"lcd\"")
            && e.ends_with("its experiments are align-fl, fedavg"),
        "{e}"
    );
    let e = reproduce(&cpu, &with(Action::Cell { key: "fedavg".into(), seed: 1 }), &Quiet).unwrap_err().to_string();
    assert!(e.contains("--cell fedavg/1: seed 1 is not in this plan, whose seeds are 0 to 0"), "{e}");

    let single = temp_dir("reproduce-single");
    reproduce(&cpu, &Settings { out: single.clone(), ..base.clone() }, &Quiet).unwrap();
    // Every metric the same; only the wall times differ.
    let rows = |out: &std::path::Path| {
        let mut rows = table_json(out)["rows"].clone();
        rows.as_array_mut().unwrap().iter_mut().for_each(|r| r["wall_seconds"] = serde_json::Value::Null);
        rows
    };
    assert_eq!(rows(&out), rows(&single));
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_dir_all(&single).unwrap();
}

/// A reproduction that asks for FID where a cell finished with `--no-fid` scores the cell's saved
/// global model instead of training again, and gets the FID a run with FID on prints, bit for bit.
#[test]
fn fid_is_added_to_a_cell_finished_without_it_as_a_run_with_fid_scores_it() {
    let Some(models) = models() else { return };
    let dir = temp_dir("reproduce-add-fid");
    // `--no-fid` turns FID off; the reproduction passes the weights.
    let mut cfg = tiny_with_fid(models.clone());
    cfg.fid.weights = None;
    let config = dir.join("tiny.toml");
    std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();
    let settings = |out: &std::path::Path, fid: bool| Settings {
        config: Some(config.clone()),
        seeds: 0..1,
        fid,
        data_dir: Some(repo().join("data/subset")),
        inception_weights: Some(models.clone()),
        only: Some(vec![Experiment::Row(Row::AlignFl)]),
        ..Settings::new(out.to_path_buf())
    };
    let cpu = tensor_kernels::Cpu::new();
    let (late, direct) = (dir.join("late"), dir.join("direct"));
    let cell = |out: &std::path::Path| out.join("cells/align-fl/seed-0");
    let checkpoint = cell(&late).join("align-fl-global.safetensors");

    reproduce(&cpu, &settings(&late, false), &Quiet).unwrap();
    assert!(report_json(&cell(&late))["final"]["fid"].is_null());
    let trained = std::fs::metadata(&checkpoint).unwrap().modified().unwrap();
    reproduce(&cpu, &settings(&late, true), &Quiet).unwrap();
    assert_eq!(std::fs::metadata(&checkpoint).unwrap().modified().unwrap(), trained, "trained again");
    reproduce(&cpu, &settings(&direct, true), &Quiet).unwrap();

    let (added, scored) = (report_json(&cell(&late)), report_json(&cell(&direct)));
    let fid = added["final"]["fid"].as_f64().expect("FID added");
    assert!(fid.is_finite() && fid > 0.0, "{fid}");
    assert_eq!(added["final"], scored["final"]);
    assert_eq!(added["config"], scored["config"]);
    assert!(added["fid_note"].is_null());
    assert_eq!(table_json(&late)["rows"][0]["fid"], table_json(&direct)["rows"][0]["fid"]);
    let log = std::fs::read_to_string(cell(&late).join(pipeline::METRICS_LOG)).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["fid"].as_f64(), Some(fid));
    assert!(std::fs::read_to_string(cell(&late).join("report.md")).unwrap().contains(&format!("{fid:.2}")));
    // Asked again, the cell is finished: nothing changes.
    let json = std::fs::read_to_string(cell(&late).join("cell.json")).unwrap();
    reproduce(&cpu, &settings(&late, true), &Quiet).unwrap();
    assert_eq!(std::fs::read_to_string(cell(&late).join("cell.json")).unwrap(), json);
    // Nor does one with FID off: the cell's FID stays, and so does the table's.
    reproduce(&cpu, &settings(&late, false), &Quiet).unwrap();
    assert_eq!(std::fs::read_to_string(cell(&late).join("cell.json")).unwrap(), json);
    assert_eq!(table_json(&late)["rows"][0]["fid"], table_json(&direct)["rows"][0]["fid"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
