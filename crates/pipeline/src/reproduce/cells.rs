//! Cells: one experiment each, in its own directory under `cells/`, with a `cell.json` that lets
//! a later reproduction reuse it when its configuration is the same.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ExperimentConfig;
use crate::out_dir::write_file;
use crate::report::{PrivacyReport, Report};
use crate::Result;

/// One experiment to run (or reuse).
pub(crate) struct Cell {
    /// Directory name under `cells/`.
    pub key: String,
    pub seed: u64,
    pub cfg: ExperimentConfig,
}

impl Cell {
    /// `out/cells/<key>/seed-<seed>`.
    pub fn dir(&self, out: &Path) -> PathBuf {
        out.join("cells").join(&self.key).join(format!("seed-{}", self.seed))
    }

    /// What `out` holds of this cell, from one read of its `cell.json`. A cell finished with FID
    /// is finished for a reproduction with FID off too. With `fid_available` (the Inception
    /// weights are here), a cell that asks for FID (after its last round alone) and finished
    /// without one, run with FID off or on without the weights, is [`Found::WithoutFid`]: its FID
    /// is added from the saved model instead of training again.
    pub fn find(&self, out: &Path, fid_available: bool) -> Found {
        let Ok(text) = std::fs::read_to_string(self.dir(out).join("cell.json")) else { return Found::Nothing };
        let Ok(result) = serde_json::from_str::<CellResult>(&text) else { return Found::Nothing };
        let wants = &self.cfg.fid;
        let same_experiment = {
            // This cell's configuration, whether its FID was switched on or off.
            let mut as_asked = result.config.clone();
            as_asked.fid.enabled = wants.enabled;
            as_asked == self.cfg
        };
        if !same_experiment {
            Found::Nothing
        } else if fid_available
            && wants.enabled
            && result.fid.is_none()
            && wants.scores_last_round_only(self.cfg.rounds)
        {
            Found::WithoutFid
        } else if result.config.fid.enabled || !wants.enabled {
            Found::Finished(Box::new(result))
        } else {
            Found::Nothing
        }
    }
}

/// What an output folder holds of a cell.
pub(crate) enum Found {
    /// Finished with this configuration.
    Finished(Box<CellResult>),
    /// Finished without the FID it asks for, which can be added from its saved model.
    WithoutFid,
    /// Not finished, or with another configuration.
    Nothing,
}

/// What the table needs from one finished cell (`cells/<key>/seed-<s>/cell.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CellResult {
    pub config: ExperimentConfig,
    pub accuracy: f64,
    pub f1: f64,
    pub fid: Option<f64>,
    pub lipschitz_decoder: f64,
    pub lipschitz_spectral_bound: f64,
    pub lipschitz_pairwise: f64,
    pub outliers_mapped_client: Option<f64>,
    pub outliers_mapped_global: Option<f64>,
    pub uplink_bytes_per_round: usize,
    /// Largest ε any client spent (DP-SGD rows).
    pub epsilon_spent: Option<f64>,
    /// Whether every client's guarantee holds (DP-SGD rows).
    pub guarantee_holds: Option<bool>,
    pub wall_seconds: f64,
    pub backend: String,
    pub threads: usize,
    /// Accuracy after each round (absent from cells made before the rounds curve).
    #[serde(default)]
    pub round_accuracy: Vec<f64>,
    /// Weighted F1 after each round (likewise).
    #[serde(default)]
    pub round_f1: Vec<f64>,
}

impl CellResult {
    /// The summary of a run's report.
    pub fn of(report: &Report) -> Self {
        let main = &report.main;
        let f = &main.final_metrics;
        let (epsilon_spent, guarantee_holds) = match &report.privacy {
            Some(PrivacyReport::DpSgd { release, guarantee_holds, .. }) => {
                (Some(release.iter().map(|c| c.epsilon).fold(0.0, f64::max)), Some(*guarantee_holds))
            }
            Some(PrivacyReport::Lipschitz { .. }) | None => (None, None),
        };
        CellResult {
            config: report.config.clone(),
            accuracy: f.accuracy,
            f1: f.f1,
            fid: f.fid,
            lipschitz_decoder: f.lipschitz_decoder,
            lipschitz_spectral_bound: f.lipschitz_spectral_bound,
            lipschitz_pairwise: f.lipschitz_pairwise,
            outliers_mapped_client: main.outliers.as_ref().map(|o| o.client.fraction_mapped_to_typical),
            outliers_mapped_global: main.outliers.as_ref().map(|o| o.global.fraction_mapped_to_typical),
            uplink_bytes_per_round: main.rounds.last().map_or(0, |r| r.uplink_bytes),
            epsilon_spent,
            guarantee_holds,
            wall_seconds: main.wall_seconds,
            backend: report.backend.clone(),
            threads: report.threads,
            round_accuracy: main.rounds.iter().map(|r| r.accuracy).collect(),
            round_f1: main.rounds.iter().map(|r| r.f1).collect(),
        }
    }

    /// Writes `cell.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        write_file(&dir.join("cell.json"), serde_json::to_string_pretty(self).expect("a cell serialises"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed cell still loads and matches the configuration the catalogue plans for it
    /// under its key and seed, as `--no-fid` plans it (some curve cells ran without FID; those
    /// with FID are reused by it too).
    #[test]
    fn the_committed_mnist_cells_load_and_are_reused() {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/results/mnist");
        let s = super::super::Settings { seeds: 0..3, fid: false, ..super::super::Settings::new(out.clone()) };
        let (base, _) = super::super::base_config(&s).unwrap();
        let (cells, ..) = super::super::plan(&s, &base).unwrap();
        let mut committed = 0;
        for key in std::fs::read_dir(out.join("cells")).unwrap() {
            let key = key.unwrap().file_name().to_string_lossy().into_owned();
            for seed_dir in std::fs::read_dir(out.join("cells").join(&key)).unwrap() {
                let name = seed_dir.unwrap().file_name().to_string_lossy().into_owned();
                let seed: u64 = name.strip_prefix("seed-").unwrap().parse().unwrap();
                let cell = cells.iter().find(|c| c.key == key && c.seed == seed);
                let cell = cell.unwrap_or_else(|| panic!("{key}/{name} is not planned any more"));
                let finished = matches!(cell.find(&out, false), Found::Finished(_));
                assert!(finished, "{key}/{name} does not load or has another configuration");
                committed += 1;
            }
        }
        // Every row over seeds 0–2, and the curve cells committed so far.
        assert!(committed >= super::super::Row::ALL.len() * 3, "{committed} committed cells");
    }
}
