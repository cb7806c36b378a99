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

/// Writes `contents` to `path` atomically: into `<path>.partial`, then renamed over `path`, so an
/// interrupted run or a full disk never leaves a truncated file under the final name.
pub(crate) fn write_file(path: &std::path::Path, contents: impl AsRef<[u8]>) -> Result<()> {
    replace_with(path, |partial| std::fs::write(partial, &contents).map_err(|e| PipelineError::io(partial, e)))
}

/// Makes `path` by `write` into `<path>.partial` and renames it over `path` once complete; the
/// partial file is removed when writing fails.
pub(crate) fn replace_with(path: &std::path::Path, write: impl FnOnce(&std::path::Path) -> Result<()>) -> Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    if let Err(e) = write(&partial) {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, path).map_err(|e| PipelineError::io(path, e))
}

/// Creates `dir` and its parents, naming it on failure.
pub(crate) fn create_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| PipelineError::io(dir, e))
}
