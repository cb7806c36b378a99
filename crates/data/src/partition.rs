//! The ALIGN-FL partition (DESIGN.md §2): client k holds the first `samples_per_class` training
//! images of each class of its class pair, client 0 also holds `outliers` images drawn at random
//! from the *other* dataset's training split (label [`OUTLIER_LABEL`]); the server evaluates on the
//! last of `eval_parts` equal random parts of the test images of the clients' classes.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::registry::{LabelledImages, IMAGE_PIXELS};
use crate::DataError;

/// Label given to the cross-domain outliers at client 0.
pub const OUTLIER_LABEL: u8 = 10;

/// What to cut.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionSpec {
    /// Classes held by each client, e.g. `[[0, 1], [2, 3], …]`.
    pub client_classes: Vec<Vec<u8>>,
    /// Training images per class (the first ones in file order; fewer if the class has fewer).
    pub samples_per_class: usize,
    /// Cross-domain outliers added to client 0.
    pub outliers: usize,
    /// Number of equal parts the test images are split into; the last is the evaluation set.
    pub eval_parts: usize,
    /// Seed of the outlier draw and of the evaluation split.
    pub seed: u64,
}

/// Images as f32 in [0, 1] with labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Samples {
    /// n × 784 pixel intensities in [0, 1].
    pub pixels: Vec<f32>,
    /// n labels.
    pub labels: Vec<u8>,
}

impl Samples {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Pixels of sample `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.pixels[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS]
    }
    fn push(&mut self, image: &[u8], label: u8) {
        self.pixels.extend(image.iter().map(|&p| f32::from(p) / 255.0));
        self.labels.push(label);
    }
    fn empty() -> Self {
        Samples { pixels: Vec::new(), labels: Vec::new() }
    }
}

/// One client's training data.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientShard {
    /// The classes this client holds (outliers excluded).
    pub classes: Vec<u8>,
    /// Training samples; outliers come last with label [`OUTLIER_LABEL`].
    pub samples: Samples,
    /// How many of the samples are outliers.
    pub outliers: usize,
}

/// The whole partition.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// One shard per client.
    pub clients: Vec<ClientShard>,
    /// The server's evaluation set.
    pub eval: Samples,
}

impl PartitionSpec {
    /// The paper's setting: five clients with class pairs (0,1)…(8,9), 6000 per class,
    /// 600 outliers, test set in 5 parts.
    pub fn paper(seed: u64) -> Self {
        PartitionSpec {
            client_classes: (0..5u8).map(|k| vec![2 * k, 2 * k + 1]).collect(),
            samples_per_class: 6000,
            outliers: 600,
            eval_parts: 5,
            seed,
        }
    }

    /// Checks the spec for values that cannot work.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |m: String| Err(DataError::Partition(m));
        if self.client_classes.is_empty() {
            return bad("there are no clients; give at least one".into());
        }
        if self.samples_per_class == 0 {
            return bad("samples_per_class is 0; give at least 1".into());
        }
        if self.eval_parts == 0 {
            return bad("eval_parts is 0; the paper uses 5".into());
        }
        let mut seen = [false; 10];
        for (k, classes) in self.client_classes.iter().enumerate() {
            if classes.is_empty() {
                return bad(format!("client {k} has no classes"));
            }
            for &c in classes {
                if c > 9 {
                    return bad(format!("client {k} has class {c}, outside 0–9"));
                }
                if seen[usize::from(c)] {
                    return bad(format!(
                        "class {c} is given to more than one client; ALIGN-FL clients hold disjoint classes"
                    ));
                }
                seen[usize::from(c)] = true;
            }
        }
        Ok(())
    }

    /// Cuts the partition from the primary dataset's splits and the other dataset's training
    /// split (the outlier source).
    pub fn cut(
        &self,
        train: &LabelledImages,
        test: &LabelledImages,
        outlier_source: &LabelledImages,
    ) -> Result<Partition, DataError> {
        self.validate()?;
        let mut rng = ChaCha20Rng::seed_from_u64(self.seed);
        let largest =
            self.client_classes.iter().flatten().map(|&c| train.labels.iter().filter(|&&l| l == c).count()).max();
        if let Some(largest) = largest.filter(|&m| m < self.samples_per_class) {
            return Err(DataError::Partition(format!(
                "samples_per_class is {} but no client class has more than {largest} training images: lower \
                 partition.samples_per_class (the paper takes up to 6000 per class, all a class has when fewer)",
                self.samples_per_class
            )));
        }
        let mut clients = Vec::with_capacity(self.client_classes.len());
        for (k, classes) in self.client_classes.iter().enumerate() {
            let mut samples = Samples::empty();
            for &c in classes {
                let picked: Vec<usize> =
                    (0..train.len()).filter(|&i| train.labels[i] == c).take(self.samples_per_class).collect();
                if picked.is_empty() {
                    return Err(DataError::Partition(format!(
                        "client {k}: the training split has no images of class {c}"
                    )));
                }
                picked.iter().for_each(|&i| samples.push(train.image(i), c));
            }
            clients.push(ClientShard { classes: classes.clone(), samples, outliers: 0 });
        }
        if self.outliers > 0 {
            if self.outliers > outlier_source.len() {
                return Err(DataError::Partition(format!(
                    "{} outliers requested but the outlier source has only {} images",
                    self.outliers,
                    outlier_source.len()
                )));
            }
            let mut idx: Vec<usize> = (0..outlier_source.len()).collect();
            let (chosen, _) = idx.partial_shuffle(&mut rng, self.outliers);
            let client0 = &mut clients[0];
            chosen.iter().for_each(|&i| client0.samples.push(outlier_source.image(i), OUTLIER_LABEL));
            client0.outliers = self.outliers;
        }
        // Test images ordered by the clients' classes, then a seeded permutation; last part.
        let mut order: Vec<usize> = self
            .client_classes
            .iter()
            .flatten()
            .flat_map(|&c| (0..test.len()).filter(move |&i| test.labels[i] == c))
            .collect();
        order.shuffle(&mut rng);
        let part = order.len() / self.eval_parts;
        if part == 0 {
            return Err(DataError::Partition(format!(
                "{} test images cannot be split into {} non-empty parts",
                order.len(),
                self.eval_parts
            )));
        }
        let mut eval = Samples::empty();
        order[(self.eval_parts - 1) * part..self.eval_parts * part]
            .iter()
            .for_each(|&i| eval.push(test.image(i), test.labels[i]));
        Ok(Partition { clients, eval })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_samples_per_class_than_any_class_holds_is_refused() {
        let spec = PartitionSpec { samples_per_class: 1_000_000, outliers: 0, ..PartitionSpec::paper(1) };
        let e = spec.cut(&fake(30, 1), &fake(10, 2), &fake(10, 3)).unwrap_err().to_string();
        assert!(e.contains("samples_per_class is 1000000") && e.contains("more than 30"), "{e}");
        // Up to what a class holds is the protocol: 6000 asked, 30 given, no error.
        let spec = PartitionSpec { samples_per_class: 30, outliers: 0, ..PartitionSpec::paper(1) };
        assert_eq!(spec.cut(&fake(30, 1), &fake(10, 2), &fake(10, 3)).unwrap().clients[0].samples.len(), 60);
    }

    /// Synthetic split with `per_class` images of each class; pixel 0 encodes the index.
    fn fake(per_class: usize, tag: u8) -> LabelledImages {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for i in 0..per_class * 10 {
            let mut img = vec![tag; IMAGE_PIXELS];
            img[0] = (i % 256) as u8;
            pixels.extend(img);
            labels.push((i % 10) as u8);
        }
        LabelledImages { pixels, labels }
    }

    #[test]
    fn paper_partition_sizes_and_label_sets() {
        let train = fake(30, 1);
        let test = fake(50, 2);
        let other = fake(20, 3);
        let spec = PartitionSpec { samples_per_class: 25, outliers: 12, ..PartitionSpec::paper(4) };
        let p = spec.cut(&train, &test, &other).unwrap();
        assert_eq!(p.clients.len(), 5);
        for (k, c) in p.clients.iter().enumerate() {
            let extra = if k == 0 { 12 } else { 0 };
            assert_eq!(c.samples.len(), 50 + extra);
            let mut labels: Vec<u8> = c.samples.labels.clone();
            labels.sort();
            labels.dedup();
            let mut want = vec![2 * k as u8, 2 * k as u8 + 1];
            if k == 0 {
                want.push(OUTLIER_LABEL);
            }
            assert_eq!(labels, want, "client {k}");
        }
        // Outliers come from the other dataset (pixel value 3 / 255).
        let c0 = &p.clients[0];
        assert_eq!(c0.outliers, 12);
        for i in 50..62 {
            assert_eq!(c0.samples.labels[i], OUTLIER_LABEL);
            assert!((c0.samples.image(i)[1] - 3.0 / 255.0).abs() < 1e-7);
        }
        // First samples_per_class of each class in file order: class 0 → indices 0, 10, 20, …
        assert!((c0.samples.image(1)[0] - 10.0 / 255.0).abs() < 1e-7);
        // Evaluation set: one fifth of the 500 test images, all classes present.
        assert_eq!(p.eval.len(), 100);
        let mut ev = p.eval.labels.clone();
        ev.sort();
        ev.dedup();
        assert_eq!(ev, (0..10).collect::<Vec<u8>>());
    }

    #[test]
    fn same_seed_same_partition_different_seed_different_eval() {
        let (train, test, other) = (fake(10, 1), fake(50, 2), fake(20, 3));
        let spec = PartitionSpec { samples_per_class: 5, outliers: 3, ..PartitionSpec::paper(1) };
        let a = spec.cut(&train, &test, &other).unwrap();
        assert_eq!(a, spec.cut(&train, &test, &other).unwrap());
        let b = PartitionSpec { seed: 2, ..spec }.cut(&train, &test, &other).unwrap();
        assert_ne!(a.eval, b.eval);
    }

    #[test]
    fn rejects_impossible_specs() {
        let (train, test, other) = (fake(10, 1), fake(10, 2), fake(2, 3));
        let base = PartitionSpec { samples_per_class: 5, outliers: 0, ..PartitionSpec::paper(1) };
        let cases = [
            (PartitionSpec { client_classes: vec![], ..base.clone() }, "no clients"),
            (PartitionSpec { client_classes: vec![vec![3, 11]], ..base.clone() }, "outside 0–9"),
            (PartitionSpec { client_classes: vec![vec![1], vec![1]], ..base.clone() }, "more than one client"),
            (PartitionSpec { samples_per_class: 0, ..base.clone() }, "samples_per_class"),
            (PartitionSpec { outliers: 21, ..base.clone() }, "outlier source has only 20"),
        ];
        for (spec, want) in cases {
            let e = spec.cut(&train, &test, &other).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        }
    }
}
