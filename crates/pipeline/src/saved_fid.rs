//! FID for a run that finished without it (`--no-fid`, or no Inception weights at the time), from
//! the global models it saved. The score decodes the latents a run with FID draws after its last
//! round (the same seed) and passes them through the same Inception, so it is the number that run
//! would have printed, without training again.

use std::path::{Path, PathBuf};

use metrics::FidScorer;
use tensor_kernels::{ImageOps, TrainingOps};
use vae::Vae;

use crate::experiment::{checkpoint_file, fid_seed, load_partition, Fid};
use crate::observer::Observer;
use crate::report::{self, Report};
use crate::{metrics_log, PipelineError, Result};

/// Scores the final global model of every strategy of the finished run in `dir` with `scorer`
/// (built on the run's evaluation images), and rewrites the run's `report.json`, `report.md` and
/// `metrics.jsonl` as a run with FID on would have written them. Returns the new report.
///
/// Only a run whose FID config scores the last round alone qualifies: the earlier rounds' models
/// are not kept. The wall times stay those of the training.
pub fn add_fid_to_run<B: TrainingOps + ImageOps>(
    backend: &B,
    dir: &Path,
    scorer: &FidScorer<B>,
    observer: &dyn Observer,
) -> Result<Report> {
    let report = report::read(dir)?;
    check_fid_can_be_added(&report, dir)?;
    score_saved_models(backend, dir, report, scorer, observer)
}

/// [`add_fid_to_run`] on the run's report, read and checked.
fn score_saved_models<B: TrainingOps + ImageOps>(
    backend: &B,
    dir: &Path,
    mut report: Report,
    scorer: &FidScorer<B>,
    observer: &dyn Observer,
) -> Result<Report> {
    report.config.fid.enabled = true;
    let seed = report.config.seed;
    for run in std::iter::once(&mut report.main).chain(report.baselines.values_mut()) {
        let path = dir.join(checkpoint_file(run.strategy));
        let (vae_cfg, weights) = vae::load_checkpoint(&path).map_err(|e| {
            PipelineError::from(e).within(format!("{}'s saved global model (needed to add FID)", run.strategy.as_str()))
        })?;
        let mut global = Vae::from_weights(backend, &vae_cfg, &weights, 0)?;
        let last = run.rounds.last_mut().ok_or_else(|| {
            PipelineError::Config(format!(
                "the run in {} recorded no round of {}",
                dir.display(),
                run.strategy.as_str()
            ))
        })?;
        let fid = scorer.score(global.decoder(), fid_seed(seed, last.round), observer)?;
        observer.note(&format!(
            "{}: FID {fid:.2} of the global model after round {}, from {}",
            run.strategy.as_str(),
            last.round,
            path.display()
        ));
        last.fid = Some(fid);
        run.final_metrics.fid = Some(fid);
    }
    report.fid_note = None;
    report::write(dir, &report)?;
    metrics_log::rewrite(dir, &report)?;
    Ok(report)
}

/// [`add_fid_to_run`] for a run's folder alone (`align-fl fid --run DIR`): loads the run's
/// evaluation images from `data_dir` (default: the data folder its report names) and the
/// Inception weights at `weights` (default: $ALIGN_FL_MODELS, then ./models), then scores.
pub fn add_fid_to_finished_run<B: TrainingOps + ImageOps>(
    backend: &B,
    dir: &Path,
    data_dir: Option<&Path>,
    weights: Option<&Path>,
    observer: &dyn Observer,
) -> Result<Report> {
    let report = report::read(dir)?;
    check_fid_can_be_added(&report, dir)?;
    let mut cfg = report.config.clone();
    cfg.fid.enabled = true;
    cfg.fid.weights = weights.map(Path::to_path_buf);
    let data_dir = data_dir.map_or_else(|| PathBuf::from(&report.data_dir), Path::to_path_buf);
    let partition = load_partition(&cfg, &data_dir)
        .map_err(|e| e.within(format!("the evaluation images of the run in {} (--data-dir)", dir.display())))?;
    let fid = Fid::prepare(backend, &cfg, &partition, observer)?;
    let scorer =
        fid.scorer().ok_or_else(|| PipelineError::Config(fid.skipped_because().unwrap_or_default().to_string()))?;
    score_saved_models(backend, dir, report, scorer, observer)
}

/// Whether the run in `dir` can have FID added: it has none (FID off, or the Inception weights
/// missing), and with FID it would have scored its last round alone (the earlier rounds' models
/// are not kept).
fn check_fid_can_be_added(report: &Report, dir: &Path) -> Result<()> {
    let cfg = &report.config;
    if report.main.final_metrics.fid.is_some() {
        return Err(PipelineError::Config(format!("the run in {} has its FID already", dir.display())));
    }
    if !cfg.fid.scores_last_round_only(cfg.rounds) {
        return Err(PipelineError::Config(format!(
            "the run in {} has fid.every = {}, which scores rounds before the last, and only the last round's model \
             is saved: run it again with FID on",
            dir.display(),
            cfg.fid.every
        )));
    }
    Ok(())
}
