//! The datasets align-fl knows: file names, SHA-256 of each decompressed file, where they come
//! from, and how a data directory is found, loaded, verified and filled.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::download::download;
use crate::idx::{self, IdxArray};
use crate::DataError;

/// Side length of every image (28 × 28 pixels).
pub const IMAGE_SIDE: usize = 28;
/// Pixels per image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;

/// A dataset in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// MNIST handwritten digits (LeCun, Cortes, Burges; CC BY-SA 3.0).
    Mnist,
    /// Fashion-MNIST (Xiao, Rasul, Vollgraf 2017; MIT, Zalando).
    FashionMnist,
}

/// Train or test split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// 60 000 training images.
    Train,
    /// 10 000 test images.
    Test,
}

/// The four files of a dataset with the SHA-256 of their decompressed contents.
const FILES: [(DatasetKind, &str, &str); 8] = [
    (DatasetKind::Mnist, "train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    (DatasetKind::Mnist, "train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    (DatasetKind::Mnist, "t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    (DatasetKind::Mnist, "t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    (
        DatasetKind::FashionMnist,
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        DatasetKind::FashionMnist,
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        DatasetKind::FashionMnist,
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        DatasetKind::FashionMnist,
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
];

/// Name of the checksum list a data directory may carry for files that are not the published
/// ones (the committed subset): `<sha256>  <dataset>/<file>` per line, decompressed contents.
pub const CHECKSUM_LIST: &str = "SHA256SUMS";

impl DatasetKind {
    /// Every registered dataset.
    pub const ALL: [DatasetKind; 2] = [DatasetKind::Mnist, DatasetKind::FashionMnist];

    /// Directory name under the data directory, also the CLI name.
    pub fn dir_name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }

    /// Human-readable name.
    pub fn display_name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "MNIST",
            DatasetKind::FashionMnist => "Fashion-MNIST",
        }
    }

    /// The other dataset, source of the cross-domain outliers.
    pub fn other(self) -> DatasetKind {
        match self {
            DatasetKind::Mnist => DatasetKind::FashionMnist,
            DatasetKind::FashionMnist => DatasetKind::Mnist,
        }
    }

    /// Canonical public mirror serving `<file>.gz`.
    pub fn mirror(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "https://ossci-datasets.s3.amazonaws.com/mnist/",
            DatasetKind::FashionMnist => "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        }
    }

    /// (file name, SHA-256 of the decompressed published file) for each file.
    pub fn files(self) -> impl Iterator<Item = (&'static str, &'static str)> {
        FILES.iter().filter(move |(d, _, _)| *d == self).map(|(_, f, h)| (*f, *h))
    }

    fn file_names(self, split: Split) -> (&'static str, &'static str) {
        match split {
            Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        }
    }
}

/// The data directory: the explicit one, else `$ALIGN_FL_DATA`, else `./data`.
pub fn resolve_data_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    match std::env::var_os("ALIGN_FL_DATA") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from("data"),
    }
}

/// Images (row-major u8 pixels) with their labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelledImages {
    /// n × 784 pixels.
    pub pixels: Vec<u8>,
    /// n labels in 0..=9.
    pub labels: Vec<u8>,
}

impl LabelledImages {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS]
    }
}

/// SHA-256 as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256, as lowercase hex, of pixel values as little-endian f32 bytes, hashed as a stream
/// (no copy of the pixels): what names a set of training images.
pub fn pixels_sha256_hex(pixels: &[f32]) -> String {
    let mut hasher = Sha256::new();
    for chunk in pixels.chunks(1024) {
        let mut bytes = [0u8; 4096];
        for (dst, v) in bytes.chunks_exact_mut(4).zip(chunk) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        hasher.update(&bytes[..4 * chunk.len()]);
    }
    hex(&hasher.finalize())
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The expected digest of `file`: from the data directory's own `SHA256SUMS` when present (which
/// must then have a line for every file: a missing line is an error, never a skipped check), else
/// from the registry.
fn expected_digest(dir: &Path, kind: DatasetKind, file: &str) -> Result<String, DataError> {
    let list = dir.join(CHECKSUM_LIST);
    let key = format!("{}/{}", kind.dir_name(), file);
    if list.is_file() {
        let text = std::fs::read_to_string(&list).map_err(|e| DataError::io(&list, e))?;
        return text
            .lines()
            .find_map(|l| {
                let mut parts = l.split_whitespace();
                let digest = parts.next()?;
                (parts.next()? == key).then(|| digest.to_owned())
            })
            .ok_or(DataError::ChecksumMissing { list, key });
    }
    Ok(kind.files().find(|(f, _)| *f == file).map(|(_, h)| h.to_owned()).expect("a file of the registry"))
}

/// Reads one file, checks its checksum and parses it.
fn load_file(dir: &Path, kind: DatasetKind, file: &str, ndim: usize) -> Result<(PathBuf, IdxArray), DataError> {
    let wanted = dir.join(kind.dir_name()).join(file);
    let path = idx::locate(&wanted).ok_or_else(|| DataError::Missing {
        dataset: kind.display_name(),
        cli_name: kind.dir_name(),
        path: wanted.clone(),
        dir: dir.to_owned(),
    })?;
    let bytes = idx::read_decompressed(&path)?;
    let expected = expected_digest(dir, kind, file)?;
    let actual = sha256_hex(&bytes);
    if actual != expected {
        return Err(DataError::Checksum { path, expected, actual });
    }
    let array = idx::parse(&bytes, &path, ndim)?;
    Ok((path, array))
}

/// Loads one split of a dataset from `dir/<dataset>/`, verifying checksums and shapes.
pub fn load_split(dir: &Path, kind: DatasetKind, split: Split) -> Result<LabelledImages, DataError> {
    let (img_name, lbl_name) = kind.file_names(split);
    let (img_path, images) = load_file(dir, kind, img_name, 3)?;
    let (lbl_path, labels) = load_file(dir, kind, lbl_name, 1)?;
    check_split(&img_path, &images, &lbl_path, &labels)?;
    Ok(LabelledImages { pixels: images.data, labels: labels.data })
}

/// A split's images are 28 × 28, as many as its labels, and every label lies in 0–9.
fn check_split(img_path: &Path, images: &IdxArray, lbl_path: &Path, labels: &IdxArray) -> Result<(), DataError> {
    let (img_path, lbl_path) = (img_path.to_owned(), lbl_path.to_owned());
    if images.dims[1] != IMAGE_SIDE || images.dims[2] != IMAGE_SIDE {
        return Err(DataError::CorruptIdx {
            path: img_path,
            reason: format!("images are {}×{}, expected 28×28", images.dims[1], images.dims[2]),
        });
    }
    if images.dims[0] != labels.dims[0] {
        return Err(DataError::CountMismatch {
            images: img_path,
            n_images: images.dims[0],
            labels: lbl_path,
            n_labels: labels.dims[0],
        });
    }
    if let Some(bad) = labels.data.iter().find(|&&l| l > 9) {
        return Err(DataError::CorruptIdx { path: lbl_path, reason: format!("label {bad} outside 0–9") });
    }
    Ok(())
}

/// Outcome of verifying one file.
#[derive(Clone, Debug)]
pub struct FileCheck {
    /// `<dataset>/<file>`.
    pub name: String,
    /// `Ok(path)` when present with the right digest and a valid header.
    pub result: Result<PathBuf, String>,
}

/// Verifies every file of `kind` in `dir` with the checks a run makes: presence, checksum, IDX
/// header, and for each split that its images are 28 × 28, that it holds as many labels as
/// images, and that every label lies in 0–9 (a failure of these is reported on the labels file).
pub fn verify(dir: &Path, kind: DatasetKind) -> Vec<FileCheck> {
    let mut checks = Vec::new();
    for split in [Split::Train, Split::Test] {
        let (img_name, lbl_name) = kind.file_names(split);
        let name = |file: &str| format!("{}/{}", kind.dir_name(), file);
        let images = load_file(dir, kind, img_name, 3);
        let labels = load_file(dir, kind, lbl_name, 1);
        match (images, labels) {
            (Ok((img_path, images)), Ok((lbl_path, labels))) => {
                let pair = check_split(&img_path, &images, &lbl_path, &labels);
                checks.push(FileCheck { name: name(img_name), result: Ok(img_path) });
                checks.push(FileCheck {
                    name: name(lbl_name),
                    result: pair.map(|()| lbl_path).map_err(|e| e.to_string()),
                });
            }
            (images, labels) => {
                for (file, result) in [(img_name, images), (lbl_name, labels)] {
                    checks.push(FileCheck {
                        name: name(file),
                        result: result.map(|(p, _)| p).map_err(|e| e.to_string()),
                    });
                }
            }
        }
    }
    checks
}

/// Fills `dir/<dataset>/` with the dataset's `.gz` files, copied from `from` (a directory that
/// holds the files directly or under `<dataset>/`) or downloaded from the public mirror.
/// Every file is checked against the registry before it is moved into place.
pub fn fetch(dir: &Path, kind: DatasetKind, from: Option<&Path>) -> Result<Vec<PathBuf>, DataError> {
    let target = dir.join(kind.dir_name());
    std::fs::create_dir_all(&target).map_err(|e| DataError::io(&target, e))?;
    let mut written = Vec::new();
    for (file, digest) in kind.files() {
        let bytes = match from {
            Some(src) => {
                let candidates = [src.join(kind.dir_name()).join(file), src.join(file)];
                let found = candidates.iter().find_map(|c| idx::locate(c)).ok_or_else(|| DataError::Missing {
                    dataset: kind.display_name(),
                    cli_name: kind.dir_name(),
                    path: candidates[1].clone(),
                    dir: src.to_owned(),
                })?;
                std::fs::read(&found).map_err(|e| DataError::io(&found, e))?
            }
            None => {
                let url = format!("{}{}.gz", kind.mirror(), file);
                download(&url, 200 << 20, &mut |_, _| {}).map_err(|reason| DataError::Download { url, reason })?
            }
        };
        let tmp = target.join(format!("{file}.gz.part"));
        let gz = if bytes.starts_with(&[0x1f, 0x8b]) { bytes } else { gzip(&bytes) };
        std::fs::write(&tmp, &gz).map_err(|e| DataError::io(&tmp, e))?;
        let actual = sha256_hex(&idx::read_decompressed(&tmp)?);
        if actual != digest {
            let _ = std::fs::remove_file(&tmp);
            return Err(DataError::Checksum { path: tmp, expected: digest.to_owned(), actual });
        }
        let dest = target.join(format!("{file}.gz"));
        std::fs::rename(&tmp, &dest).map_err(|e| DataError::io(&dest, e))?;
        written.push(dest);
    }
    Ok(written)
}

/// gzip-compresses bytes.
pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_digests_hash_the_little_endian_bytes_across_chunks() {
        let pixels: Vec<f32> = (0..2500).map(|i| i as f32 / 7.0).collect();
        let bytes: Vec<u8> = pixels.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(pixels_sha256_hex(&pixels), sha256_hex(&bytes));
        assert_ne!(pixels_sha256_hex(&pixels[1..]), pixels_sha256_hex(&pixels));
    }

    #[test]
    fn data_dir_prefers_explicit_path() {
        assert_eq!(resolve_data_dir(Some(Path::new("/x"))), PathBuf::from("/x"));
    }

    #[test]
    fn missing_dataset_says_how_to_fetch() {
        let e = load_split(Path::new("/nonexistent-dir"), DatasetKind::Mnist, Split::Train).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("align-fl data fetch") && msg.contains("train-images-idx3-ubyte"), "{msg}");
    }

    #[test]
    fn checksum_mismatch_is_reported_with_both_digests() {
        let dir = std::env::temp_dir().join(format!("registry-test-{}", std::process::id()));
        let ds = dir.join("mnist");
        std::fs::create_dir_all(&ds).unwrap();
        let imgs = idx::encode(&IdxArray { dims: vec![1, 28, 28], data: vec![0; 784] });
        std::fs::write(ds.join("t10k-images-idx3-ubyte"), &imgs).unwrap();
        let e = load_split(&dir, DatasetKind::Mnist, Split::Test).unwrap_err();
        assert!(matches!(e, DataError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("0fa7898d"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn checksum_list_in_directory_is_honoured() {
        let dir = std::env::temp_dir().join(format!("registry-list-{}", std::process::id()));
        let ds = dir.join("mnist");
        std::fs::create_dir_all(&ds).unwrap();
        let imgs = idx::encode(&IdxArray { dims: vec![2, 28, 28], data: vec![7; 2 * 784] });
        let lbls = idx::encode(&IdxArray { dims: vec![2], data: vec![3, 4] });
        std::fs::write(ds.join("t10k-images-idx3-ubyte.gz"), gzip(&imgs)).unwrap();
        std::fs::write(ds.join("t10k-labels-idx1-ubyte"), &lbls).unwrap();
        let list = format!(
            "{}  mnist/t10k-images-idx3-ubyte\n{}  mnist/t10k-labels-idx1-ubyte\n",
            sha256_hex(&imgs),
            sha256_hex(&lbls)
        );
        std::fs::write(dir.join(CHECKSUM_LIST), &list).unwrap();
        let split = load_split(&dir, DatasetKind::Mnist, Split::Test).unwrap();
        assert_eq!(split.labels, vec![3, 4]);
        assert_eq!(split.image(1)[0], 7);
        // A list without a line for a file does not switch that file's check off.
        let without_labels: String = list.lines().take(1).map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.join(CHECKSUM_LIST), without_labels).unwrap();
        let e = load_split(&dir, DatasetKind::Mnist, Split::Test).unwrap_err();
        assert!(e.to_string().contains("no line for mnist/t10k-labels-idx1-ubyte"), "{e}");
        let checks = verify(&dir, DatasetKind::Mnist);
        let labels = checks.iter().find(|c| c.name == "mnist/t10k-labels-idx1-ubyte").unwrap();
        assert!(labels.result.as_ref().unwrap_err().contains("no line"), "{labels:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn verify_runs_the_checks_a_run_makes() {
        let dir = std::env::temp_dir().join(format!("registry-verify-{}", std::process::id()));
        let ds = dir.join("mnist");
        std::fs::create_dir_all(&ds).unwrap();
        let imgs = idx::encode(&IdxArray { dims: vec![2, 28, 28], data: vec![7; 2 * 784] });
        let write = |labels: Vec<u8>| {
            let lbls = idx::encode(&IdxArray { dims: vec![labels.len()], data: labels });
            std::fs::write(ds.join("t10k-images-idx3-ubyte"), &imgs).unwrap();
            std::fs::write(ds.join("t10k-labels-idx1-ubyte"), &lbls).unwrap();
            let list = format!(
                "{}  mnist/t10k-images-idx3-ubyte\n{}  mnist/t10k-labels-idx1-ubyte\n",
                sha256_hex(&imgs),
                sha256_hex(&lbls)
            );
            std::fs::write(dir.join(CHECKSUM_LIST), list).unwrap();
        };
        let labels_check = || {
            let checks = verify(&dir, DatasetKind::Mnist);
            checks.into_iter().find(|c| c.name == "mnist/t10k-labels-idx1-ubyte").unwrap().result
        };
        write(vec![3, 200]);
        assert!(labels_check().unwrap_err().contains("label 200 outside 0–9"));
        write(vec![3, 4, 5]);
        assert!(labels_check().unwrap_err().contains("holds 2 images but"));
        write(vec![3, 4]);
        assert!(labels_check().is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
