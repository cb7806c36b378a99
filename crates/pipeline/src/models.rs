//! The FID Inception weights on this machine (`align-fl models fetch`): pytorch-fid's release,
//! downloaded or given as a file, checked, converted to [`INCEPTION_FILE`] and placed where runs
//! look for it.

use std::path::{Path, PathBuf};

use metrics::{convert_pytorch_fid, INCEPTION_FILE, INCEPTION_SHA256, MAX_INCEPTION_BYTES, PYTORCH_FID_SHA256_PREFIX};

use crate::{PipelineError, Result};

/// Where the weights come from.
pub enum InceptionSource<'a> {
    /// pytorch-fid's release at this address (its default is [`metrics::PYTORCH_FID_URL`]), whose
    /// SHA-256 must begin with the published [`PYTORCH_FID_SHA256_PREFIX`].
    Download {
        /// The address.
        url: &'a str,
        /// (bytes so far, total when known), as they arrive.
        progress: &'a mut dyn FnMut(u64, Option<u64>),
    },
    /// A PyTorch checkpoint of the same state dict on this machine (the release itself, or a
    /// re-save in either of PyTorch's formats); the converted file's SHA-256 is the check.
    File(&'a Path),
}

/// What [`fetch_inception`] did.
#[derive(Debug)]
pub struct FetchedWeights {
    /// The weights file.
    pub path: PathBuf,
    /// True when a verified copy was already there and nothing was fetched.
    pub already_present: bool,
}

/// The folder `models fetch` fills: `explicit`, else `$ALIGN_FL_MODELS`, else the per-user
/// cache ([`metrics::models_cache_dir`]); all of them are searched by runs.
pub fn models_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ALIGN_FL_MODELS").filter(|d| !d.is_empty()).map(PathBuf::from))
        .or_else(metrics::models_cache_dir)
        .ok_or_else(|| {
            PipelineError::Config(
                "no folder for the models: HOME is unset; pass --to DIR or set ALIGN_FL_MODELS".into(),
            )
        })
}

/// Puts [`INCEPTION_FILE`] into `dir` from `source`, unless a copy with the published SHA-256 is
/// there already. The file appears under its name only once converted and verified.
pub fn fetch_inception(source: InceptionSource<'_>, dir: &Path) -> Result<FetchedWeights> {
    if let InceptionSource::File(path) = &source {
        if !path.is_file() {
            return Err(PipelineError::Config(format!(
                "--from {}: no such file; give pytorch-fid's pt_inception-2015-12-05-{PYTORCH_FID_SHA256_PREFIX}.pth",
                path.display()
            )));
        }
    }
    let dest = dir.join(INCEPTION_FILE);
    if data::read_bounded(&dest, MAX_INCEPTION_BYTES).is_ok_and(|b| data::sha256_hex(&b) == INCEPTION_SHA256) {
        return Ok(FetchedWeights { path: dest, already_present: true });
    }
    std::fs::create_dir_all(dir).map_err(|e| PipelineError::io(dir, e))?;
    let bytes = match source {
        InceptionSource::File(path) => convert_pytorch_fid(path)?,
        InceptionSource::Download { url, progress } => {
            let fail = |reason: String| PipelineError::ModelDownload { url: url.to_owned(), reason };
            let body = data::download(url, MAX_INCEPTION_BYTES, progress).map_err(fail)?;
            let digest = data::sha256_hex(&body);
            if !digest.starts_with(PYTORCH_FID_SHA256_PREFIX) {
                return Err(fail(format!(
                    "its sha256 {digest} does not begin with the published {PYTORCH_FID_SHA256_PREFIX}: the download \
                     is damaged or is not pytorch-fid's release"
                )));
            }
            let pth = dir.join(format!("pt_inception-2015-12-05-{PYTORCH_FID_SHA256_PREFIX}.pth.part"));
            std::fs::write(&pth, &body).map_err(|e| PipelineError::io(&pth, e))?;
            let converted = convert_pytorch_fid(&pth);
            // The release is only an input: the converted file is what runs read.
            std::fs::remove_file(&pth).map_err(|e| PipelineError::io(&pth, e))?;
            converted?
        }
    };
    let part = dir.join(format!("{INCEPTION_FILE}.part"));
    std::fs::write(&part, &bytes).map_err(|e| PipelineError::io(&part, e))?;
    std::fs::rename(&part, &dest).map_err(|e| PipelineError::io(&dest, e))?;
    Ok(FetchedWeights { path: dest, already_present: false })
}
