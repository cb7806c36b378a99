//! Errors of the data crate: each names the file or value at fault and what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong reading, verifying, fetching or partitioning data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A dataset's files are not in the data directory.
    #[error(
        "{dataset} not found: {path} does not exist (nor its .gz).\n  \
         Fetch it with `align-fl data fetch --dataset {cli_name} --data-dir {dir}` \
         (or `--from DIR` to copy a local copy), or point --data-dir / ALIGN_FL_DATA at a directory holding {cli_name}/."
    )]
    Missing {
        /// Human name of the dataset.
        dataset: &'static str,
        /// CLI name of the dataset.
        cli_name: &'static str,
        /// The path that was looked for.
        path: PathBuf,
        /// The data directory searched.
        dir: PathBuf,
    },
    /// An IDX file is malformed.
    #[error("{path}: corrupt IDX file: {reason}. Delete it and fetch it again (`align-fl data fetch`).")]
    CorruptIdx {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file's SHA-256 does not match the registry.
    #[error(
        "{path}: checksum mismatch (SHA-256 of the decompressed contents is {actual}, expected {expected}). \
         The file is damaged or not the published one: delete it and run `align-fl data fetch` again."
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Expected digest (hex).
        expected: String,
        /// Actual digest (hex).
        actual: String,
    },
    /// A path given as a file is a device, pipe or folder.
    #[error("{path} is not a regular file (a device, pipe or folder); name the file itself")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// A file is larger than what it should hold may take.
    #[error("{path} is larger than the {limit} bytes such a file may take; is it the right file?")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
    /// An image file or folder cannot serve as an image set.
    #[error("{path}: {reason}")]
    Images {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A data directory's own checksum list lacks a file.
    #[error(
        "{list} has no line for {key}: every file of a data directory with its own list needs one \
         (`align-fl data subset` writes it), so the file cannot be checked. Add `<sha256>  {key}`, or \
         delete the list to check the files against the registry's digests"
    )]
    ChecksumMissing {
        /// The list.
        list: PathBuf,
        /// The `<dataset>/<file>` it lacks.
        key: String,
    },
    /// Images and labels disagree.
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        /// Images file.
        images: PathBuf,
        /// Number of images.
        n_images: usize,
        /// Labels file.
        labels: PathBuf,
        /// Number of labels.
        n_labels: usize,
    },
    /// A partition request cannot be satisfied.
    #[error("invalid partition: {0}")]
    Partition(String),
    /// A download failed.
    #[error("downloading {url} failed: {reason}. Without network access use `align-fl data fetch --from DIR`.")]
    Download {
        /// The address.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }
}
