//! Checks against the full published data, when `ALIGN_FL_DATA` points at it (CI sets it to
//! ../shared/data); skipped with a printed reason otherwise.

use std::path::PathBuf;

use data::{load_split, verify, DatasetKind, PartitionSpec, Split, OUTLIER_LABEL};

fn full_data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("ALIGN_FL_DATA").map(PathBuf::from)?;
    dir.join("mnist").is_dir().then_some(dir)
}

#[test]
fn full_data_verifies_and_partitions_like_the_paper() {
    let Some(dir) = full_data_dir() else {
        eprintln!("skipped: ALIGN_FL_DATA is not set to a full data directory");
        return;
    };
    for kind in DatasetKind::ALL {
        for check in verify(&dir, kind) {
            assert!(check.result.is_ok(), "{}: {:?}", check.name, check.result);
        }
    }
    let train = load_split(&dir, DatasetKind::Mnist, Split::Train).unwrap();
    let test = load_split(&dir, DatasetKind::Mnist, Split::Test).unwrap();
    let other = load_split(&dir, DatasetKind::FashionMnist, Split::Train).unwrap();
    assert_eq!((train.len(), test.len(), other.len()), (60_000, 10_000, 60_000));
    let p = PartitionSpec::paper(0).cut(&train, &test, &other).unwrap();
    let sizes: Vec<usize> = p.clients.iter().map(|c| c.samples.len()).collect();
    // min(6000, images of the class) per class: MNIST has fewer than 6000 training images of
    // classes 0 (5923), 2 (5958), 4 (5842), 5 (5421), 6 (5918), 8 (5851) and 9 (5949).
    // Client 0 also holds the 600 outliers.
    let per_class: Vec<usize> = (0..10u8).map(|c| train.labels.iter().filter(|&&l| l == c).count().min(6000)).collect();
    assert_eq!(per_class, vec![5923, 6000, 5958, 6000, 5842, 5421, 5918, 6000, 5851, 5949]);
    assert_eq!(sizes, vec![12_523, 11_958, 11_263, 11_918, 11_800]);
    assert_eq!(p.clients[0].samples.labels.iter().filter(|&&l| l == OUTLIER_LABEL).count(), 600);
    assert_eq!(p.eval.len(), 2000);
}

#[test]
fn fetch_from_a_local_directory_copies_and_verifies() {
    let Some(src) = full_data_dir() else {
        eprintln!("skipped: ALIGN_FL_DATA is not set to a full data directory");
        return;
    };
    let dst = std::env::temp_dir().join(format!("align-fl-fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    let written = data::fetch(&dst, DatasetKind::Mnist, Some(&src.join("mnist"))).unwrap();
    assert_eq!(written.len(), 4);
    assert!(verify(&dst, DatasetKind::Mnist).iter().all(|c| c.result.is_ok()));
    // A source holding the wrong dataset under the right names is refused, and nothing is left.
    let bad = data::fetch(&dst, DatasetKind::FashionMnist, Some(&src.join("mnist"))).unwrap_err();
    assert!(bad.to_string().contains("checksum mismatch"), "{bad}");
    assert!(!dst.join("fashion-mnist/train-images-idx3-ubyte.gz").exists());
    std::fs::remove_dir_all(&dst).unwrap();
}
