//! The figures a run writes, and their file names (made here and nowhere else).

use crate::config::StrategyKind;

/// A figure of one run's global model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FigureKind {
    /// 100 images decoded from z ~ N(0, I).
    Samples,
    /// The evaluation set's latent means, coloured by class.
    Latent,
    /// The same scatter as SVG, with axes and a legend (for papers).
    LatentVector,
    /// Client 0's outliers, through its own VAE and through the global VAE.
    Outliers,
}

impl FigureKind {
    /// The figures a run writes for each strategy; the outlier figure only where it is written
    /// ([`crate::ExperimentConfig::analyses_training_images`]).
    pub fn of_run(with_outliers: bool) -> Vec<FigureKind> {
        let mut kinds = vec![FigureKind::Samples, FigureKind::Latent, FigureKind::LatentVector];
        if with_outliers {
            kinds.push(FigureKind::Outliers);
        }
        kinds
    }

    /// File name of this figure for `subject` (a strategy in a run's folder, a table row in a
    /// reproduction's `figures/`).
    pub fn file_name(self, subject: &str) -> String {
        let (kind, extension) = match self {
            FigureKind::Samples => ("samples", "png"),
            FigureKind::Latent => ("latent", "png"),
            FigureKind::LatentVector => ("latent", "svg"),
            FigureKind::Outliers => ("outliers", "png"),
        };
        format!("{kind}-{subject}.{extension}")
    }

    /// File name of this figure in the folder of a run of `strategy`.
    pub fn of_strategy(self, strategy: StrategyKind) -> String {
        self.file_name(strategy.as_str())
    }
}
