//! `models fetch` without the network: downloads from a server this test runs on 127.0.0.1, a
//! dead address, and files given with `--from`. Whatever fails leaves the folder without the
//! weights file or any partial file.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use metrics::INCEPTION_FILE;
use pipeline::models::{fetch_inception, InceptionSource};
use pipeline::PipelineError;

fn empty_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("align-fl-models-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).map_or(Vec::new(), |d| d.map(|e| e.unwrap().file_name().to_string_lossy().into()).collect())
}

/// Serves `body` once over HTTP/1.1 on 127.0.0.1, announcing `length` bytes; returns the URL.
fn serve_once(body: Vec<u8>, length: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/pt_inception-2015-12-05-6726825d.pth", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request).unwrap();
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        let _ = stream.write_all(&body);
    });
    url
}

fn download(url: &str, dir: &Path, seen: &mut Vec<(u64, Option<u64>)>) -> Result<(), PipelineError> {
    let mut progress = |done, total| seen.push((done, total));
    fetch_inception(InceptionSource::Download { url, progress: &mut progress }, dir).map(|_| ())
}

#[test]
fn a_download_with_another_hash_is_refused_and_nothing_is_written() {
    let dir = empty_dir("hash");
    let body = b"<html>a captive portal, not the weights</html>".to_vec();
    let url = serve_once(body.clone(), body.len());
    let mut seen = Vec::new();
    let e = download(&url, &dir, &mut seen).unwrap_err().to_string();
    assert!(e.contains(&url) && e.contains("does not begin with the published 6726825d"), "{e}");
    assert!(e.contains("align-fl models fetch --from FILE"), "{e}");
    assert_eq!(seen.last(), Some(&(body.len() as u64, Some(body.len() as u64))));
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
}

#[test]
fn a_download_cut_short_is_refused() {
    let dir = empty_dir("short");
    let url = serve_once(vec![7u8; 1000], 5000);
    let e = download(&url, &dir, &mut Vec::new()).unwrap_err().to_string();
    assert!(e.contains("closed before all bytes were read"), "{e}");
    assert!(files_in(&dir).is_empty());
}

#[test]
fn an_unreachable_address_names_the_url_and_the_offline_route() {
    let dir = empty_dir("dead");
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/pt_inception-2015-12-05-6726825d.pth");
    let e = download(&url, &dir, &mut Vec::new()).unwrap_err().to_string();
    assert!(e.starts_with(&format!("downloading {url} failed")), "{e}");
    assert!(e.contains("align-fl models fetch --from FILE"), "{e}");
    assert!(files_in(&dir).is_empty());
}

#[test]
fn a_file_that_is_not_the_release_is_refused_by_name() {
    let dir = empty_dir("from");
    let excerpt = Path::new(env!("CARGO_MANIFEST_DIR")).join("../metrics/tests/fixtures/pytorch-fid-stem.pth");
    let e = fetch_inception(InceptionSource::File(&excerpt), &dir).unwrap_err().to_string();
    assert!(e.contains("Conv2d_2a_3x3.conv.weight is missing"), "{e}");
    let e = fetch_inception(InceptionSource::File(&dir.join("absent.pth")), &dir).unwrap_err().to_string();
    assert!(e.contains("absent.pth: no such file"), "{e}");
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
}

/// A verified copy already in the folder is kept, and nothing is downloaded.
#[test]
fn a_verified_copy_is_kept() {
    let published = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models").join(INCEPTION_FILE);
    if !published.is_file() {
        println!("skipped: {} is absent", published.display());
        return;
    }
    let dir = empty_dir("kept");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&published, dir.join(INCEPTION_FILE)).unwrap();
    let mut seen = Vec::new();
    let mut progress = |done, total| seen.push((done, total));
    let url = "http://127.0.0.1:9/never-asked";
    let fetched = fetch_inception(InceptionSource::Download { url, progress: &mut progress }, &dir).unwrap();
    assert!(fetched.already_present && fetched.path == dir.join(INCEPTION_FILE));
    assert!(seen.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
