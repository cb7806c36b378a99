//! One error type for the pipeline: each crate's error converts into it, and the pipeline's own
//! failures name the setting, file or experiment at fault.

use std::path::PathBuf;

/// Everything that can stop a run or a reproduction.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading, verifying or partitioning data.
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// Building or training a VAE.
    #[error(transparent)]
    Vae(#[from] vae::VaeError),
    /// The federation: clients, updates, strategies.
    #[error(transparent)]
    Federation(#[from] federation::FederationError),
    /// Privacy accounting or DP-SGD set-up.
    #[error(transparent)]
    Privacy(#[from] privacy::PrivacyError),
    /// Evaluation, figures, FID.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// A configuration that cannot work; the message names the setting and the fix.
    #[error("{0}")]
    Config(String),
    /// A config file that does not parse.
    #[error("config {path} is not a valid experiment (see configs/paper-mnist.toml): {error}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        error: String,
    },
    /// A file or folder could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// Training failed; says what of the run is kept.
    #[error("{strategy}: {error}\n  {kept}")]
    Training {
        /// The strategy whose round failed.
        strategy: &'static str,
        /// Why.
        error: federation::FederationError,
        /// What was kept on disk.
        kept: String,
    },
    /// The FID weights could not be downloaded, or the download is not the published file.
    #[error(
        "downloading {url} failed: {reason}. Nothing was written. Without access to it, download the file on \
         another machine and run `align-fl models fetch --from FILE` here"
    )]
    ModelDownload {
        /// The address.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// An error inside a named part of the work (an experiment, a client).
    #[error("{context}: {error}")]
    In {
        /// Where it happened.
        context: String,
        /// What happened.
        error: Box<PipelineError>,
    },
    /// Some experiments of a reproduction failed; the others are in the table.
    #[error(
        "{} experiment(s) failed; the table shows the others. Run the same command again to retry them:\n  {}",
        .0.len(),
        .0.join("\n  ")
    )]
    ExperimentsFailed(Vec<String>),
    /// `reproduce --collect` found experiments that have not finished; the others are in the table.
    #[error(
        "{} experiment(s) have not finished; the table shows the others. Run their commands (listed \
         below and in plan.txt), then collect again:\n  {}",
        .0.len(),
        .0.join("\n  ")
    )]
    ExperimentsUnfinished(Vec<String>),
}

impl PipelineError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        PipelineError::Io { path: path.into(), error }
    }

    /// This error, inside `context`.
    pub fn within(self, context: impl Into<String>) -> Self {
        PipelineError::In { context: context.into(), error: Box::new(self) }
    }
}

/// The pipeline's result.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
