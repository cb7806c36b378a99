//! What a run tells whoever watches it: progress bars in the command line, nothing in tests.

use federation::Progress;
use metrics::FeatureProgress;

use crate::config::StrategyKind;
use crate::report::RoundRecord;

/// Watches a run: its notes, each strategy's rounds, and FID's feature extraction.
pub trait Observer: FeatureProgress + Sync {
    /// A line for the user: what the run is about to do, or a warning.
    fn note(&self, line: &str);
    /// `strategy` starts `rounds` rounds with `clients` clients; the returned sink hears its
    /// clients' and server's epochs and its finished rounds.
    fn strategy_started(&self, strategy: StrategyKind, rounds: usize, clients: usize) -> Box<dyn RoundProgress + '_>;
}

/// Hears one strategy's run.
pub trait RoundProgress: Progress {
    /// A round finished with these metrics.
    fn round_finished(&self, strategy: StrategyKind, record: &RoundRecord);
    /// The strategy's rounds are over (or failed).
    fn finished(&self);
}

/// An [`Observer`] that shows nothing.
pub struct Quiet;

impl FeatureProgress for Quiet {
    fn images_done(&self, _what: &str, _done: usize, _total: usize) {}
}

impl Progress for Quiet {}

impl RoundProgress for Quiet {
    fn round_finished(&self, _strategy: StrategyKind, _record: &RoundRecord) {}
    fn finished(&self) {}
}

impl Observer for Quiet {
    fn note(&self, _line: &str) {}
    fn strategy_started(&self, _: StrategyKind, _: usize, _: usize) -> Box<dyn RoundProgress + '_> {
        Box::new(Quiet)
    }
}
