//! Conversion of pytorch-fid's checkpoint against fixtures made from pytorch-fid's own code
//! (scripts/make-pytorch-fid-fixture.py): its state dict's names, shapes and value digests, and
//! an excerpt saved by PyTorch in the legacy format of the released file. The checks against the
//! published weights are skipped, with the reason printed, when ../shared is absent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use metrics::{
    convert_pytorch_fid, convert_pytorch_fid_entries, inception_safetensors, pytorch_fid_module, MetricsError,
    PytorchCheckpoint, INCEPTION_FILE, INCEPTION_SHA256,
};
use safetensors::SafeTensors;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// pytorch-fid's state dict: name → (dtype, shape, digest of the values).
fn state_dict() -> HashMap<String, (String, Vec<usize>, String)> {
    let text = std::fs::read_to_string(fixture("pytorch-fid-state-dict.txt")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let shape = f[2].split('x').filter(|d| !d.is_empty()).map(|d| d.parse().unwrap()).collect();
            (f[0].to_owned(), (f[1].to_owned(), shape, f[3].to_owned()))
        })
        .collect()
}

/// The first 16 hex digits of the SHA-256 of the values' little-endian bytes.
fn digest(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    data::sha256_hex(&bytes)[..16].to_owned()
}

/// The published weights, when ../shared is beside the repository.
fn published() -> Option<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models").join(INCEPTION_FILE);
    if !path.is_file() {
        println!("skipped: {} is absent", path.display());
    }
    std::fs::read(path).ok()
}

/// Every convolution's five entries exist in pytorch-fid's state dict as f32 of the right
/// shape, and the entries left unused are only the classifier and BN counters. With the
/// published weights, each entry's digest is that of the tensor the conversion puts in its place,
/// so no two same-shaped convolutions can be swapped.
#[test]
fn the_name_table_matches_pytorch_fid_state_dict() {
    let dict = state_dict();
    assert_eq!(dict.len(), 566);
    let mut used = Vec::new();
    let mut entry = |name: &str, shape: &[usize]| -> Result<Vec<f32>, MetricsError> {
        let (dtype, want, _) = dict.get(name).unwrap_or_else(|| panic!("{name} is not in pytorch-fid's state dict"));
        assert_eq!((dtype.as_str(), want.as_slice()), ("float32", shape), "{name}");
        used.push(name.to_owned());
        Ok(vec![1.0; shape.iter().product()])
    };
    convert_pytorch_fid_entries(&mut entry).unwrap();
    assert_eq!(used.len(), 94 * 5);
    let unused: Vec<&String> = dict.keys().filter(|k| !used.contains(k)).collect();
    assert!(unused.iter().all(|k| k.starts_with("fc.") || k.ends_with(".num_batches_tracked")), "{unused:?}");
    assert_eq!(unused.len(), 2 + 94);

    let Some(bytes) = published() else { return };
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let values = |name: &str| -> Vec<f32> {
        file.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    for name in file.names() {
        let (graph, part) = name.rsplit_once('.').unwrap();
        let module = pytorch_fid_module(graph).unwrap();
        let entry = match part {
            "weight" => "conv.weight",
            "beta" => "bn.bias",
            "mean" => "bn.running_mean",
            _ => "bn.running_var",
        };
        let v = values(name);
        assert_eq!(dict[&format!("{module}.{entry}")].2, digest(&v), "{name} ← {module}.{entry}");
        assert_eq!(
            dict[&format!("{module}.bn.weight")].2,
            digest(&vec![1.0; dict[&format!("{module}.bn.weight")].1[0]])
        );
    }
}

/// The legacy-format excerpt PyTorch wrote reads back with the digests pytorch-fid's state dict
/// lists; entries of another type, shape or name are refused by name.
#[test]
fn the_legacy_checkpoint_excerpt_reads_back() {
    let dict = state_dict();
    let path = fixture("pytorch-fid-stem.pth");
    let checkpoint = PytorchCheckpoint::open(&path).unwrap();
    for part in ["conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"] {
        let name = format!("Conv2d_1a_3x3.{part}");
        let (_, shape, want) = &dict[&name];
        assert_eq!(&digest(&checkpoint.entry(&name, shape).unwrap()), want, "{name}");
    }
    let e = checkpoint.entry("Conv2d_1a_3x3.bn.num_batches_tracked", &[]).unwrap_err().to_string();
    assert!(e.contains("I64") && e.contains("expected F32"), "{e}");
    let e = checkpoint.entry("Conv2d_1a_3x3.conv.weight", &[3, 3, 3, 32]).unwrap_err().to_string();
    assert!(e.contains("[32, 3, 3, 3]"), "{e}");
    // The whole conversion reads the stem and stops at the first convolution the excerpt lacks.
    let e = convert_pytorch_fid(&path).unwrap_err().to_string();
    assert!(e.contains("Conv2d_2a_3x3.conv.weight is missing") && e.contains("pytorch-fid-stem.pth"), "{e}");
}

#[test]
fn a_file_that_is_no_checkpoint_is_refused_by_name() {
    let path = std::env::temp_dir().join(format!("not-a-checkpoint-{}.pth", std::process::id()));
    std::fs::write(&path, b"<html>404 Not Found</html>").unwrap();
    let e = convert_pytorch_fid(&path).map(|_| ()).unwrap_err().to_string();
    std::fs::remove_file(&path).unwrap();
    assert!(e.contains("not a PyTorch checkpoint") && e.contains("pt_inception-2015-12-05-6726825d.pth"), "{e}");
}

/// The published weights, put under pytorch-fid's names with γ = 1 and converted back, give the
/// published file byte for byte: the serialisation (order, metadata, padding) is the same.
#[test]
fn converting_the_published_weights_back_reproduces_the_file() {
    let Some(bytes) = published() else { return };
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut entry = |name: &str, shape: &[usize]| -> Result<Vec<f32>, MetricsError> {
        let (module, part) = name.split_once(".conv.").or_else(|| name.split_once(".bn.")).unwrap();
        let graph = file
            .names()
            .into_iter()
            .map(|n| n.rsplit_once('.').unwrap().0)
            .find(|g| pytorch_fid_module(g).as_deref() == Some(module))
            .unwrap();
        let ours = match part {
            "weight" if name.contains(".conv.") => "weight",
            "weight" => return Ok(vec![1.0; shape.iter().product()]),
            "bias" => "beta",
            "running_mean" => "mean",
            _ => "var",
        };
        let t = file.tensor(&format!("{graph}.{ours}")).unwrap();
        assert_eq!(t.shape(), shape);
        Ok(t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    };
    let converted = inception_safetensors(&convert_pytorch_fid_entries(&mut entry).unwrap());
    assert!(converted == bytes, "sha256 {} instead of {INCEPTION_SHA256}", data::sha256_hex(&converted));
}
