//! The IDX format of MNIST-style files (LeCun et al.): a big-endian magic `0x0000_08_NN` where NN
//! is the number of dimensions, NN big-endian u32 sizes, then the unsigned bytes. Files may be
//! gzip-compressed; the gzip magic selects decompression.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use crate::DataError;

/// A decoded IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Sizes of each dimension.
    pub dims: Vec<usize>,
    /// Row-major values.
    pub data: Vec<u8>,
}

/// The largest IDX file read (header and data): 512 MiB, ten times the largest file of the
/// registry (MNIST's 47 MB training images).
pub const MAX_IDX_BYTES: usize = 512 << 20;

/// The length of the IDX file whose first bytes are `start` (header plus the data its sizes
/// promise), or None when `start` does not yet hold the whole header. Errors when the sizes
/// overflow or exceed [`MAX_IDX_BYTES`].
fn declared_len(start: &[u8], path: &Path) -> Result<Option<usize>, DataError> {
    let Some(&ndim) = start.get(3) else { return Ok(None) };
    let header = 4 + 4 * usize::from(ndim);
    if start.len() < header {
        return Ok(None);
    }
    let data = (0..usize::from(ndim)).try_fold(1usize, |acc, d| {
        acc.checked_mul(u32::from_be_bytes(start[4 + 4 * d..8 + 4 * d].try_into().expect("4 bytes")) as usize)
    });
    match data.and_then(|n| n.checked_add(header)) {
        Some(total) if total <= MAX_IDX_BYTES => Ok(Some(total)),
        _ => Err(DataError::CorruptIdx {
            path: path.to_owned(),
            reason: format!("its header declares more than the {} MiB limit of an IDX file", MAX_IDX_BYTES >> 20),
        }),
    }
}

/// Reads a file's bytes, decompressing gzip when the file starts with the gzip magic. The
/// decompressed stream is read no further than the length its IDX header declares (plus one byte,
/// to tell a longer stream), so a gzip bomb is refused after a few bytes, not gigabytes.
pub fn read_decompressed(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = crate::read_bounded(path, MAX_IDX_BYTES as u64)?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let damaged = |e: std::io::Error| DataError::CorruptIdx {
        path: path.to_owned(),
        reason: format!("gzip stream is damaged or truncated ({e})"),
    };
    let mut stream = GzDecoder::new(&raw[..]);
    // The magic and the number of dimensions, then the sizes: at most 4 + 4·255 bytes.
    let mut out = Vec::new();
    (&mut stream).take(4).read_to_end(&mut out).map_err(damaged)?;
    if let Some(&ndim) = out.get(3) {
        (&mut stream).take(4 * u64::from(ndim)).read_to_end(&mut out).map_err(damaged)?;
    }
    let Some(total) = declared_len(&out, path)? else { return Ok(out) };
    let remaining = (total - out.len()) as u64;
    (&mut stream).take(remaining + 1).read_to_end(&mut out).map_err(damaged)?;
    if out.len() > total {
        return Err(DataError::CorruptIdx {
            path: path.to_owned(),
            reason: format!("it decompresses to more than the {total} bytes its IDX header declares"),
        });
    }
    Ok(out)
}

/// Parses IDX bytes, checking the magic, the number of dimensions and that the payload length
/// equals the product of the sizes exactly.
pub fn parse(bytes: &[u8], path: &Path, expected_dims: usize) -> Result<IdxArray, DataError> {
    let corrupt = |reason: String| DataError::CorruptIdx { path: path.to_owned(), reason };
    if bytes.len() < 4 {
        return Err(corrupt(format!("{} bytes is too short for an IDX header", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(corrupt(format!(
            "bad magic {:02x}{:02x}{:02x}{:02x} (expected 0000 08 {:02x})",
            bytes[0], bytes[1], bytes[2], bytes[3], expected_dims
        )));
    }
    if bytes[2] != 0x08 {
        return Err(corrupt(format!("element type 0x{:02x} is not unsigned byte (0x08)", bytes[2])));
    }
    let ndim = usize::from(bytes[3]);
    if ndim != expected_dims {
        return Err(corrupt(format!("{ndim} dimensions, expected {expected_dims}")));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(corrupt("header is truncated".into()));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().expect("4 bytes")) as usize)
        .collect();
    let expected_len = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let payload = bytes.len() - header;
    match expected_len {
        Some(n) if n == payload => Ok(IdxArray { dims, data: bytes[header..].to_vec() }),
        Some(n) if n > payload => {
            Err(corrupt(format!("truncated: header promises {n} bytes of data ({dims:?}), file holds {payload}")))
        }
        Some(n) => Err(corrupt(format!("{} trailing bytes after the {n} the header promises ({dims:?})", payload - n))),
        None => Err(corrupt(format!("dimensions {dims:?} overflow"))),
    }
}

/// Encodes an array as IDX bytes (unsigned byte elements).
pub fn encode(array: &IdxArray) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, array.dims.len() as u8];
    for &d in &array.dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(&array.data);
    out
}

/// The existing file among `path` and `path.gz`, preferring the uncompressed one.
pub fn locate(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_owned());
    }
    let mut gz = path.as_os_str().to_owned();
    gz.push(".gz");
    let gz = PathBuf::from(gz);
    gz.is_file().then_some(gz)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode(&IdxArray { dims: vec![2, 2, 3], data: (0..12).collect() })
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        crate::registry::gzip(bytes)
    }

    #[test]
    fn a_gzip_bomb_is_refused_after_its_header() {
        let dir = std::env::temp_dir().join(format!("idx-bomb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A header for 2 × 2 × 3 bytes, then 64 MiB of zeros: 64 KiB compressed.
        let mut bomb = sample();
        bomb.resize(bomb.len() + (64 << 20), 0);
        let path = dir.join("bomb.gz");
        std::fs::write(&path, gzip(&bomb)).unwrap();
        let e = read_decompressed(&path).unwrap_err().to_string();
        assert!(e.contains("bomb.gz") && e.contains("more than the 28 bytes its IDX header declares"), "{e}");
        // A header that declares more than the limit is refused before any data is read.
        let huge = encode(&IdxArray { dims: vec![1 << 20, 1 << 10], data: Vec::new() });
        std::fs::write(&path, gzip(&huge)).unwrap();
        let e = read_decompressed(&path).unwrap_err().to_string();
        assert!(e.contains("512 MiB limit"), "{e}");
        // A well-formed file reads back whole.
        std::fs::write(&path, gzip(&sample())).unwrap();
        assert_eq!(read_decompressed(&path).unwrap(), sample());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn round_trip() {
        let a = parse(&sample(), Path::new("x"), 3).unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.data, (0..12).collect::<Vec<u8>>());
    }

    #[test]
    fn rejects_truncated_payload() {
        let mut b = sample();
        b.pop();
        let e = parse(&b, Path::new("imgs"), 3).unwrap_err().to_string();
        assert!(e.contains("imgs") && e.contains("truncated"), "{e}");
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut b = sample();
        b.push(0);
        assert!(parse(&b, Path::new("x"), 3).unwrap_err().to_string().contains("trailing"));
    }

    #[test]
    fn rejects_bad_magic_type_and_rank() {
        let mut b = sample();
        b[0] = 1;
        assert!(parse(&b, Path::new("x"), 3).unwrap_err().to_string().contains("bad magic"));
        let mut b = sample();
        b[2] = 0x0d;
        assert!(parse(&b, Path::new("x"), 3).unwrap_err().to_string().contains("element type"));
        assert!(parse(&sample(), Path::new("x"), 1).unwrap_err().to_string().contains("dimensions"));
        assert!(parse(&[0, 0, 8], Path::new("x"), 1).unwrap_err().to_string().contains("too short"));
        assert!(parse(&[0, 0, 8, 3, 0], Path::new("x"), 3).unwrap_err().to_string().contains("header"));
    }

    #[test]
    fn reads_gzip_and_reports_truncated_gzip() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("idx-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&sample()).unwrap();
        let gz = enc.finish().unwrap();
        std::fs::write(&path, &gz).unwrap();
        assert_eq!(read_decompressed(&path).unwrap(), sample());
        std::fs::write(&path, &gz[..gz.len() / 2]).unwrap();
        let e = read_decompressed(&path).unwrap_err().to_string();
        assert!(e.contains("a.gz") && e.contains("gzip"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
