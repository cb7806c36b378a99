//! Limits before work: the memory a configuration needs, estimated from its sizes and checked
//! against what the machine has before any data is loaded or any model trained.

use crate::config::{ExperimentConfig, ModelConfig, StrategyKind};
use crate::{PipelineError, Result};

/// Bytes of one f32.
const F32: f64 = 4.0;
/// Rows a decoder processes at once (`vae`'s chunking of encode / decode).
const CHUNK_ROWS: f64 = 5000.0;

/// The largest part of a run's memory, with the setting that drives it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryEstimate {
    /// Bytes in all.
    pub total: f64,
    /// The setting whose part is largest.
    pub largest: &'static str,
}

/// Weights, gradients and Adam's two moments of a model, with its batch's activations and
/// deltas: bytes (in f64, so absurd sizes do not overflow).
fn model_bytes(m: &ModelConfig, input: f64, batch: f64) -> f64 {
    let widths: Vec<f64> = std::iter::once(input)
        .chain(m.encoder.iter().map(|&w| w as f64))
        .chain([2.0 * m.latent as f64])
        .chain(std::iter::once(m.latent as f64))
        .chain(m.decoder.iter().map(|&w| w as f64))
        .chain([input])
        .collect();
    let params: f64 = widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
    let activations: f64 = widths.iter().sum::<f64>() * 2.0 * batch.max(CHUNK_ROWS);
    (4.0 * params + activations) * F32
}

impl ExperimentConfig {
    /// The memory a run of this configuration needs, roughly: every client's model and the
    /// global one with their optimiser state and activations, the ALIGN-FL server's pool of
    /// synthetic images, the clients' data and FID's decoded samples.
    pub fn memory_estimate(&self) -> MemoryEstimate {
        let input = data::IMAGE_PIXELS as f64;
        let clients = self.partition.clients as f64;
        let batch = self.client.batch_size.max(self.server.batch_size) as f64;
        let client_models: f64 =
            (0..self.partition.clients).map(|k| model_bytes(self.client_model(k), input, batch)).sum();
        let global = model_bytes(self.global_model(), input, batch);
        let align_fl = std::iter::once(&self.strategy).chain(&self.compare).any(|&s| s == StrategyKind::AlignFl);
        let pool = if align_fl { clients * self.server.synthetic_samples as f64 * input * F32 } else { 0.0 };
        let per_class = self.partition.class_pairs.first().map_or(2, Vec::len) as f64;
        let data = clients * per_class * self.partition.samples_per_class as f64 * input * F32;
        let fid = if self.fid.enabled { self.fid.samples as f64 * input * F32 } else { 0.0 };
        let parts = [
            ("the models' sizes ([model], client_models, server.model)", client_models + global),
            ("server.synthetic_samples", pool),
            ("partition.samples_per_class", data),
            ("fid.samples", fid),
        ];
        let largest = parts.iter().fold(parts[0], |a, &b| if b.1 > a.1 { b } else { a }).0;
        MemoryEstimate { total: parts.iter().map(|p| p.1).sum(), largest }
    }

    /// Refuses a configuration whose [`ExperimentConfig::memory_estimate`] exceeds `available`
    /// bytes, naming the setting that drives it.
    pub fn check_memory(&self, available: f64) -> Result<()> {
        let estimate = self.memory_estimate();
        if estimate.total > available {
            return Err(PipelineError::Config(format!(
                "this run needs about {} of memory, more than the {} available; most of it for {}: lower it",
                gib(estimate.total),
                gib(available),
                estimate.largest
            )));
        }
        Ok(())
    }
}

fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / (1u64 << 30) as f64)
}

/// The memory this machine can give a run (Linux's MemAvailable), or None where unknown.
pub fn available_memory() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_sizes_are_refused_with_the_setting_named() {
        let limit = 16.0 * (1u64 << 30) as f64;
        let refused = |edit: &dyn Fn(&mut ExperimentConfig), want: &str| {
            let mut cfg = ExperimentConfig::default();
            edit(&mut cfg);
            let e = cfg.check_memory(limit).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("16.0 GiB available"), "{e} should name {want}");
        };
        refused(&|c| c.server.synthetic_samples = 1_000_000_000_000, "server.synthetic_samples");
        refused(&|c| c.model.latent = 100_000_000, "the models' sizes");
        refused(&|c| c.model.encoder[0] = 100_000_000_000, "the models' sizes");
        // The paper protocol fits in well under a gigabyte of model state and pool.
        let paper = ExperimentConfig::default().memory_estimate();
        assert!(paper.total < 1.5 * (1u64 << 30) as f64, "{paper:?}");
        ExperimentConfig::default().check_memory(limit).unwrap();
    }
}
