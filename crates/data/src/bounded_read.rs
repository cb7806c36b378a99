//! Reading a file a user or a peer names, bounded: something other than a file (a device such
//! as `/dev/zero`, a pipe, a folder) or a file over the limit is refused by name before it is
//! read into memory.

use std::io::Read as _;
use std::path::Path;

use crate::DataError;

/// The bytes of `path`, a file of at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, DataError> {
    let too_large = || DataError::TooLarge { path: path.to_owned(), limit };
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if !meta.is_file() {
        return Err(DataError::NotAFile { path: path.to_owned() });
    }
    if meta.len() > limit {
        return Err(too_large());
    }
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| DataError::io(path, e))?;
    // The file may have grown since its size was read.
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_folders_and_oversized_files_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("align-fl-bounded-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.toml");
        std::fs::write(&file, b"rounds = 2\n").unwrap();
        assert_eq!(read_bounded(&file, 11).unwrap(), b"rounds = 2\n");
        let e = read_bounded(&file, 10).unwrap_err().to_string();
        assert!(e.contains("config.toml is larger than the 10 bytes such a file may take"), "{e}");
        let e = read_bounded(&dir, 10).unwrap_err().to_string();
        assert!(e.contains("is not a regular file (a device, pipe or folder)"), "{e}");
        if Path::new("/dev/zero").exists() {
            let e = read_bounded(Path::new("/dev/zero"), 10).unwrap_err().to_string();
            assert!(e.starts_with("/dev/zero is not a regular file"), "{e}");
        }
        let e = read_bounded(&dir.join("missing"), 10).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
