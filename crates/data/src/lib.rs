//! Data for align-fl: the IDX reader, the registry of MNIST and Fashion-MNIST with checksums,
//! fetching and verifying a data directory, the committed subset, the ALIGN-FL partition, and
//! image sets (IDX files or PNG folders) for FID and for a deployed client's own images.
//!
//! ```no_run
//! use data::{load_split, resolve_data_dir, DatasetKind, PartitionSpec, Split};
//! let dir = resolve_data_dir(None); // --data-dir, else $ALIGN_FL_DATA, else ./data
//! let train = load_split(&dir, DatasetKind::Mnist, Split::Train)?;
//! let test = load_split(&dir, DatasetKind::Mnist, Split::Test)?;
//! let other = load_split(&dir, DatasetKind::FashionMnist, Split::Train)?;
//! let partition = PartitionSpec::paper(0).cut(&train, &test, &other)?;
//! assert_eq!(partition.clients.len(), 5);
//! # Ok::<(), data::DataError>(())
//! ```

mod bounded_read;
mod download;
mod error;
pub mod idx;
mod image_set;
mod partition;
mod registry;
mod subset;

pub use bounded_read::read_bounded;
pub use download::download;
pub use error::DataError;
pub use image_set::ImageSet;
pub use partition::{ClientShard, Partition, PartitionSpec, Samples, OUTLIER_LABEL};
pub use registry::{
    fetch, load_split, pixels_sha256_hex, resolve_data_dir, sha256_hex, verify, DatasetKind, FileCheck, LabelledImages,
    Split, CHECKSUM_LIST, IMAGE_PIXELS, IMAGE_SIDE,
};
pub use subset::{make_subset, SubsetSizes, LICENCE_NOTICE};
