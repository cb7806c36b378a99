//! Helpers shared by the pipeline's integration tests: the repository's configs and committed
//! data subset, temporary folders, and the Inception weights beside the repository.

#![allow(dead_code)] // Each test file uses its own subset.

use std::path::{Path, PathBuf};

use pipeline::{ExperimentConfig, Quiet, Report};
use tensor_kernels::{ImageOps, TrainingOps};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh, empty temporary folder named after `name`.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("align-fl-pipeline-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A config of the repository's `configs/`.
pub fn config(name: &str) -> ExperimentConfig {
    ExperimentConfig::load(&repo().join("configs").join(name)).unwrap()
}

/// The quick config cut to one round of one epoch, 100 synthetic samples, no baseline, no FID:
/// seconds.
pub fn tiny() -> ExperimentConfig {
    let mut cfg = config("quick.toml");
    cfg.rounds = 1;
    cfg.client.local_epochs = 1;
    cfg.server.server_epochs = 1;
    cfg.server.synthetic_samples = 100;
    cfg.compare = Vec::new();
    cfg.fid.enabled = false;
    cfg
}

/// [`tiny`] with FID on the final round, kept cheap: a 100-image evaluation set and 24 samples.
pub fn tiny_with_fid(weights: PathBuf) -> ExperimentConfig {
    let mut cfg = tiny();
    cfg.partition.eval_parts = 10;
    cfg.fid = pipeline::config::FidConfig { enabled: true, samples: 24, every: 0, batch: 8, weights: Some(weights) };
    cfg
}

/// Runs `cfg` on `backend` into `out` on the config's data.
pub fn run_on<B: TrainingOps + ImageOps>(backend: &B, cfg: &ExperimentConfig, out: &Path) -> pipeline::Result<Report> {
    pipeline::run_experiment(backend, cfg, &cfg.data_dir(None), out, &Quiet)
}

/// Runs `cfg` on the CPU into `out`.
pub fn run(cfg: &ExperimentConfig, out: &Path) -> pipeline::Result<Report> {
    run_on(&tensor_kernels::Cpu::new(), cfg, out)
}

/// `report.json` as JSON.
pub fn report_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

/// The Inception weights folder beside the repository, or None (with the reason printed).
pub fn models() -> Option<PathBuf> {
    let dir = repo().join("../shared/models");
    if dir.join(metrics::INCEPTION_FILE).is_file() {
        Some(dir)
    } else {
        println!("skipped: no Inception weights in {}", dir.display());
        None
    }
}
