//! Reading a file that a user or a peer names, bounded: something other than a file (a device
//! such as `/dev/zero`, a pipe) or a file over the limit is refused by name before it is read
//! into memory.

use std::io::Read as _;
use std::path::Path;

use crate::{PipelineError, Result};

/// Largest experiment config read (1 MiB; the paper's is under 2 KiB).
pub(crate) const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The bytes of `path`, a file of at most `limit` bytes holding `what`.
pub(crate) fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| PipelineError::io(path, e))?;
    let too_big = || {
        PipelineError::Config(format!(
            "{} is larger than the {} bytes {what} may take; is it the right file?",
            path.display(),
            limit
        ))
    };
    if !meta.is_file() {
        return Err(PipelineError::Config(format!(
            "{} is not a regular file (a device, pipe or folder); give the file that holds {what}",
            path.display()
        )));
    }
    if meta.len() > limit {
        return Err(too_big());
    }
    let file = std::fs::File::open(path).map_err(|e| PipelineError::io(path, e))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| PipelineError::io(path, e))?;
    // The file may have grown since its size was read.
    if bytes.len() as u64 > limit {
        return Err(too_big());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_folders_and_oversized_files_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("align-fl-input-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.toml");
        std::fs::write(&file, b"rounds = 2\n").unwrap();
        assert_eq!(read_bounded(&file, 11, "a config").unwrap(), b"rounds = 2\n");
        let e = read_bounded(&file, 10, "a config").unwrap_err().to_string();
        assert!(e.contains("config.toml is larger than the 10 bytes a config may take"), "{e}");
        let e = read_bounded(&dir, 10, "a config").unwrap_err().to_string();
        assert!(e.contains("is not a regular file") && e.contains("give the file that holds a config"), "{e}");
        if Path::new("/dev/zero").exists() {
            let e = read_bounded(Path::new("/dev/zero"), 10, "a config").unwrap_err().to_string();
            assert!(e.starts_with("/dev/zero is not a regular file"), "{e}");
        }
        let e = read_bounded(&dir.join("missing"), 10, "a config").unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
