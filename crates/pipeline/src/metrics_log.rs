//! `metrics.jsonl`: one JSON object per finished round and strategy, appended and flushed as the
//! run goes, so a run can be followed live (`tail -f`) and plotted by any tool.

use std::io::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::config::StrategyKind;
use crate::report::{Report, RoundRecord};
use crate::{PipelineError, Result};

/// The log's file name inside a run's folder.
pub const METRICS_LOG: &str = "metrics.jsonl";

/// One line: the strategy and its round's record, flattened.
#[derive(Serialize)]
struct Line<'a> {
    strategy: StrategyKind,
    #[serde(flatten)]
    record: &'a RoundRecord,
}

/// Starts an empty log in `dir` (a rerun into the same folder starts over).
pub(crate) fn start(dir: &Path) -> Result<()> {
    let path = dir.join(METRICS_LOG);
    std::fs::write(&path, b"").map_err(|e| PipelineError::io(&path, e))
}

/// Appends `record` of `strategy` to the log in `dir` and flushes it to the file before returning.
pub(crate) fn append(dir: &Path, strategy: StrategyKind, record: &RoundRecord) -> Result<()> {
    let path = dir.join(METRICS_LOG);
    let mut line = serde_json::to_vec(&Line { strategy, record }).expect("a round record serialises");
    line.push(b'\n');
    let mut file =
        std::fs::OpenOptions::new().append(true).create(true).open(&path).map_err(|e| PipelineError::io(&path, e))?;
    // One write of the whole line, so a reader never sees half a line from this writer.
    file.write_all(&line).and_then(|()| file.flush()).map_err(|e| PipelineError::io(&path, e))
}

/// Writes the log of `report` anew: the main strategy's rounds, then each baseline's (the order a
/// run appends them in).
pub(crate) fn rewrite(dir: &Path, report: &Report) -> Result<()> {
    start(dir)?;
    let baselines = report.config.compare.iter().filter_map(|b| report.baselines.get(b));
    for run in std::iter::once(&report.main).chain(baselines) {
        for record in &run.rounds {
            append(dir, run.strategy, record)?;
        }
    }
    Ok(())
}
