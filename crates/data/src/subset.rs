//! The small real-data subset committed to the repository (`data/subset`), made from the full
//! data by `align-fl data subset`: the first N images of each class of each split of both
//! datasets, in file order, as gzip IDX files with a `SHA256SUMS` list and the licence notice.

use std::path::{Path, PathBuf};

use crate::idx::{self, IdxArray};
use crate::registry::{self, DatasetKind, LabelledImages, Split, CHECKSUM_LIST, IMAGE_SIDE};
use crate::DataError;

/// Images per class taken from each split.
#[derive(Clone, Copy, Debug)]
pub struct SubsetSizes {
    /// Per class from the training split.
    pub train_per_class: usize,
    /// Per class from the test split.
    pub test_per_class: usize,
}

/// Licence notice written beside the subset.
pub const LICENCE_NOTICE: &str = "\
This directory holds small subsets of two public datasets, made by `align-fl data subset`
(the first N images of each class of each split, in file order).

MNIST: Yann LeCun, Corinna Cortes, Christopher J.C. Burges. Licensed CC BY-SA 3.0
(https://creativecommons.org/licenses/by-sa/3.0/). The subset is a derivative, shared alike.

Fashion-MNIST: Han Xiao, Kashif Rasul, Roland Vollgraf (Zalando Research), 2017.
Licensed under the MIT License, Copyright (c) 2017 Zalando SE.
";

fn first_per_class(images: &LabelledImages, per_class: usize) -> LabelledImages {
    let mut counts = [0usize; 10];
    let mut out = LabelledImages { pixels: Vec::new(), labels: Vec::new() };
    for i in 0..images.len() {
        let c = usize::from(images.labels[i]);
        if counts[c] < per_class {
            counts[c] += 1;
            out.pixels.extend_from_slice(images.image(i));
            out.labels.push(images.labels[i]);
        }
    }
    out
}

/// Writes the subset of both datasets from `src` (a full data directory) into `dst`.
pub fn make_subset(src: &Path, dst: &Path, sizes: SubsetSizes) -> Result<Vec<PathBuf>, DataError> {
    let mut sums = String::new();
    let mut written = Vec::new();
    for kind in DatasetKind::ALL {
        let dir = dst.join(kind.dir_name());
        std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
        for (split, per_class, img_name, lbl_name) in [
            (Split::Train, sizes.train_per_class, "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            (Split::Test, sizes.test_per_class, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        ] {
            let part = first_per_class(&registry::load_split(src, kind, split)?, per_class);
            let n = part.len();
            let arrays = [
                (img_name, IdxArray { dims: vec![n, IMAGE_SIDE, IMAGE_SIDE], data: part.pixels }),
                (lbl_name, IdxArray { dims: vec![n], data: part.labels }),
            ];
            for (name, array) in arrays {
                let raw = idx::encode(&array);
                sums.push_str(&format!("{}  {}/{}\n", registry::sha256_hex(&raw), kind.dir_name(), name));
                let path = dir.join(format!("{name}.gz"));
                std::fs::write(&path, registry::gzip(&raw)).map_err(|e| DataError::io(&path, e))?;
                written.push(path);
            }
        }
    }
    let list = dst.join(CHECKSUM_LIST);
    std::fs::write(&list, sums).map_err(|e| DataError::io(&list, e))?;
    let notice = dst.join("LICENSE-DATA.txt");
    std::fs::write(&notice, LICENCE_NOTICE).map_err(|e| DataError::io(&notice, e))?;
    Ok(written)
}
