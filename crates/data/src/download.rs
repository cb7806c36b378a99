//! HTTP(S) downloads of published files: the datasets here, the FID weights in the pipeline.

use std::io::Read;
use std::time::Duration;

/// Longest wait for the server to connect or send.
const TIMEOUT: Duration = Duration::from_secs(120);

/// GETs `url` into memory, refusing bodies over `max_bytes`, and reports (bytes so far, total
/// when the server sends a length) to `progress` as they arrive. The error is the reason, for the
/// caller to name the file and the offline route. A body shorter than its announced length is an
/// error (ureq's check).
pub fn download(url: &str, max_bytes: u64, progress: &mut dyn FnMut(u64, Option<u64>)) -> Result<Vec<u8>, String> {
    let resp = ureq::get(url).timeout(TIMEOUT).call().map_err(|e| e.to_string())?;
    let total = resp.header("Content-Length").and_then(|v| v.parse::<u64>().ok());
    if let Some(t) = total.filter(|&t| t > max_bytes) {
        return Err(format!("the server announces {t} bytes, more than the {max_bytes} expected"));
    }
    let mut body = resp.into_reader().take(max_bytes + 1);
    let mut out = Vec::with_capacity(total.unwrap_or(0) as usize);
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = body.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
        progress(out.len() as u64, total);
    }
    if out.len() as u64 > max_bytes {
        return Err(format!("the body exceeds the {max_bytes} bytes expected"));
    }
    Ok(out)
}
