//! The paper's comparison table and figures from one call.
//!
//! The table's rows (ALIGN-FL without privacy, DP-SGD under RDP and PLD, DP-SGD on the decoder
//! only, LCD-VAE, FedAvg, FedProx, a heterogeneous-architecture federation) and the curves
//! (accuracy and FID against ε under RDP and PLD, λ_lip, synthetic samples per client, the latent
//! dimension of every VAE or of the server's alone, without privacy or under DP-SGD, the server's
//! epochs, and the round of a 20-round run) run for every seed.
//! Every experiment is a *cell* with its own directory under `cells/`; a cell whose `cell.json`
//! holds the same configuration is reused, so an interrupted reproduction resumes where it
//! stopped; one that finished without FID (`--no-fid`, or no Inception weights) gets it from its
//! saved global model when a later reproduction asks for FID with the weights present, without
//! training again. The partition and the FID statistics of the evaluation images are computed
//! once per seed and shared by its cells; cells whose clients train alike (ALIGN-FL differing in
//! the server alone) share one set of clients, a server each. The table shows the experiments
//! asked for and every other one already finished in the output folder, so one curve run into a
//! reproduction's folder adds to its table instead of replacing it.
//!
//! On a cluster the cells run apart: [`Action::Plan`] writes one self-contained command per
//! unfinished cell (`plan.txt`, for a Slurm array, Kubernetes indexed Jobs or GNU parallel), each
//! running [`Action::Cell`] into the shared output folder, and [`Action::Collect`] builds the
//! table from the cells that have finished.

mod catalogue;
mod cells;
mod charts;
mod table;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Instant;

use data::DatasetKind;
use tensor_kernels::{ImageOps, TrainingOps};

pub use catalogue::{Curve, Experiment, PaperNumbers, Row, PAPER_ALIGN_FID, ROUNDS_CURVE};
use cells::{Cell, CellResult, Found};
use table::Lookup;

use crate::config::ExperimentConfig;
use crate::experiment::{load_partition, run_on_partition, run_sharing_clients, Fid, Prepared};
use crate::observer::Observer;
use crate::out_dir::{create_dir, write_file};
use crate::report::Report;
use crate::saved_fid::add_fid_to_run;
use crate::{PipelineError, Result};

/// What `reproduce` does with the planned cells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run every unfinished cell here, then write the table.
    RunAll,
    /// Write `plan.txt`: one command line per unfinished cell, each running [`Action::Cell`].
    Plan,
    /// Write the table from the finished cells; the unfinished ones are named, and an error.
    Collect,
    /// Run only this cell (its key, as in `cells/<key>/`, and seed); no table.
    Cell {
        /// The cell's key.
        key: String,
        /// Its seed.
        seed: u64,
    },
}

/// What a reproduction is asked for.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Run, plan, collect or run one cell.
    pub action: Action,
    /// Primary dataset (the other one supplies client 0's outliers).
    pub dataset: DatasetKind,
    /// The seeds of every row and curve point.
    pub seeds: Range<u64>,
    /// Output directory.
    pub out: PathBuf,
    /// The committed subset and the quick preset instead of the paper protocol.
    pub quick: bool,
    /// A base protocol of one's own (TOML, as a run's config) instead of the presets.
    pub config: Option<PathBuf>,
    /// Only these rows and curves, or all.
    pub only: Option<Vec<Experiment>>,
    /// Compute FID.
    pub fid: bool,
    /// Override the rounds of every cell but the rounds curve's ([`ROUNDS_CURVE`]).
    pub rounds: Option<usize>,
    /// Data directory (default: `data/subset` under `quick`, else $ALIGN_FL_DATA, then ./data).
    pub data_dir: Option<PathBuf>,
    /// Inception weights file.
    pub inception_weights: Option<PathBuf>,
}

impl Settings {
    /// The paper protocol on MNIST, 3 seeds, everything, FID on, into `out`.
    pub fn new(out: PathBuf) -> Self {
        Settings {
            action: Action::RunAll,
            dataset: DatasetKind::Mnist,
            seeds: 0..3,
            out,
            quick: false,
            config: None,
            only: None,
            fid: true,
            rounds: None,
            data_dir: None,
            inception_weights: None,
        }
    }

    /// Whether the paper's numbers apply: DESIGN.md has them for MNIST on the full protocol only
    /// (a `--config` or `--rounds` row then says what it changes from it).
    fn paper_comparable(&self) -> bool {
        !self.quick && self.dataset == DatasetKind::Mnist
    }

    /// The paper protocol as a reproduction without `--config` and `--rounds` would run it, where
    /// the paper's numbers apply.
    fn paper_base(&self) -> Result<Option<ExperimentConfig>> {
        if !self.paper_comparable() {
            return Ok(None);
        }
        base_config(&Settings { config: None, rounds: None, ..self.clone() }).map(|(cfg, _)| Some(cfg))
    }

    /// "Paper protocol", "Quick protocol (committed subset)" or the config file's.
    fn protocol_label(&self) -> String {
        match (&self.config, self.quick) {
            (Some(path), _) => format!("Protocol of `{}`", path.display()),
            (None, true) => "Quick protocol (committed subset)".into(),
            (None, false) => "Paper protocol".into(),
        }
    }

    /// "3 seed(s)" from seed 0, else "seeds 3–5".
    fn seeds_label(&self) -> String {
        match (self.seeds.start, self.seeds.end - self.seeds.start) {
            (0, n) => format!("{n} seed(s)"),
            (first, 1) => format!("seed {first}"),
            (first, _) => format!("seeds {first}–{}", self.seeds.end - 1),
        }
    }

    /// The `align-fl reproduce` command line that makes this table.
    fn command_line(&self) -> String {
        self.command_without_folder() + &format!(" --out {}", self.out.display())
    }

    /// The command line's settings, without the output folder.
    fn command_without_folder(&self) -> String {
        let mut c = String::from("align-fl reproduce");
        if self.quick {
            c += " --quick";
        }
        if let Some(path) = &self.config {
            c += &format!(" --config {}", path.display());
        }
        if self.dataset == DatasetKind::FashionMnist {
            c += " --dataset fashion-mnist";
        }
        if self.seeds.start > 0 {
            c += &format!(" --first-seed {}", self.seeds.start);
        }
        c += &format!(" --seeds {}", self.seeds.end - self.seeds.start);
        if let Some(r) = self.rounds {
            c += &format!(" --rounds {r}");
        }
        if let Some(only) = &self.only {
            c += &format!(" --only {}", only.iter().map(|e| e.key()).collect::<Vec<_>>().join(","));
        }
        if !self.fid {
            c += " --no-fid";
        }
        c
    }

    /// The self-contained command that runs `cell` alone: the settings, the machine-specific
    /// inputs given here (else the node's `ALIGN_FL_DATA` / `ALIGN_FL_MODELS`), and `--cell`.
    fn cell_command_line(&self, cell: &Cell) -> String {
        let mut c = self.command_line();
        if let Some(d) = &self.data_dir {
            c += &format!(" --data-dir {}", d.display());
        }
        if let Some(w) = &self.inception_weights {
            c += &format!(" --inception-weights {}", w.display());
        }
        c + &format!(" --cell {}/{}", cell.key, cell.seed)
    }

    fn wants(&self, e: Experiment) -> bool {
        self.only.as_ref().is_none_or(|o| o.contains(&e))
    }
}

/// The protocol every cell starts from, and the data directory its config names (if any).
fn base_config(s: &Settings) -> Result<(ExperimentConfig, Option<PathBuf>)> {
    let mut cfg = match (&s.config, s.quick) {
        (Some(path), _) => ExperimentConfig::load(path)?,
        (None, true) => toml::from_str(catalogue::QUICK).expect("the embedded configs/quick.toml parses"),
        (None, false) => ExperimentConfig::default(),
    };
    // Only a config file's own data_dir counts (the embedded preset's is relative to configs/).
    let data_dir = cfg.data_dir.take().filter(|_| s.config.is_some());
    cfg.dataset = s.dataset;
    cfg.compare = Vec::new();
    if let Some(r) = s.rounds {
        cfg.rounds = r;
    }
    cfg.fid.enabled &= s.fid;
    cfg.fid.weights = None;
    Ok((cfg, data_dir))
}

/// Every cell the settings ask for, with the rows and curves; a configuration met twice runs
/// once (under its first key). A curve's point that is a row's run (ε = 10, λ_lip = 0.1, the
/// paper's latent, …) takes the row's key even where the row is not asked for, so `--only
/// <curve>` reuses the row's finished cells and a later whole reproduction reuses the point's.
fn plan(s: &Settings, base: &ExperimentConfig) -> Result<(Vec<Cell>, Vec<Row>, Vec<Curve>)> {
    let rows: Vec<Row> = Row::ALL.into_iter().filter(|&r| s.wants(Experiment::Row(r))).collect();
    let curves: Vec<Curve> = Curve::ALL.into_iter().filter(|&c| s.wants(Experiment::Curve(c))).collect();
    let mut cells: Vec<Cell> = Vec::new();
    let mut push = |key: String, cfg: ExperimentConfig| {
        if !cells.iter().any(|c| c.cfg == cfg) {
            cells.push(Cell { key, seed: cfg.seed, cfg });
        }
    };
    // Every row's run for every seed, asked for or not: the curves' points look their keys up here.
    let row_runs: Vec<(Row, ExperimentConfig)> =
        s.seeds.clone().flat_map(|seed| Row::ALL.into_iter().map(move |r| (r, r.config(base, seed)))).collect();
    for (r, cfg) in row_runs.iter().filter(|(r, _)| rows.contains(r)) {
        push(r.key().to_string(), cfg.clone());
    }
    for seed in s.seeds.clone() {
        for &curve in &curves {
            for &x in curve.xs() {
                let (key, cfg) = curve.point(base, x, seed);
                let row = row_runs.iter().find(|(_, run)| *run == cfg);
                push(row.map_or(key, |(r, _)| r.key().to_string()), cfg);
            }
        }
    }
    for c in &cells {
        c.cfg.validate().map_err(|e| e.within(format!("experiment {} (seed {})", c.key, c.seed)))?;
    }
    Ok((cells, rows, curves))
}

/// Why `--cell KEY/SEED` names no planned cell: an experiment the plan does not hold (listing
/// those it does) or a seed outside `--first-seed`/`--seeds`.
fn not_in_plan(key: &str, seed: u64, cells: &[Cell], s: &Settings) -> String {
    if cells.iter().any(|c| c.key == key) {
        let (first, last) = (s.seeds.start, s.seeds.end - 1);
        return format!(
            "--cell {key}/{seed}: seed {seed} is not in this plan, whose seeds are {first} to {last} (--first-seed \
             {first} --seeds {}); pass the --first-seed and --seeds the plan was made with",
            s.seeds.end - s.seeds.start
        );
    }
    let mut keys: Vec<&str> = Vec::new();
    for c in cells {
        if !keys.contains(&c.key.as_str()) {
            keys.push(&c.key);
        }
    }
    format!(
        "--cell {key}/{seed}: this plan has no experiment {key:?} (check --only, --dataset and --config); its \
         experiments are {}",
        keys.join(", ")
    )
}

/// Does `s.action` with the planned cells: by default runs (or reuses) every cell, then writes
/// `table.md`, `table.json` and `figures/` into `s.out`. Failed (or, collecting, unfinished)
/// experiments are named in the table and in the error returned after it is written; running
/// again retries only them.
pub fn reproduce<B: TrainingOps + ImageOps>(backend: &B, s: &Settings, observer: &dyn Observer) -> Result<()> {
    if s.seeds.is_empty() {
        return Err(PipelineError::Config("--seeds 0: run at least one seed (--seeds 3 runs seeds 0, 1 and 2)".into()));
    }
    let start = Instant::now();
    let (base, config_data_dir) = base_config(s)?;
    let data_dir = match (&s.data_dir, config_data_dir, s.quick) {
        (Some(d), _, _) => d.clone(),
        (None, Some(d), _) => d,
        (None, None, true) => PathBuf::from("data/subset"),
        (None, None, false) => data::resolve_data_dir(None),
    };
    let (cells, rows, curves) = plan(s, &base)?;
    let asked_cell = match &s.action {
        Action::Cell { key, seed } => Some(
            cells
                .iter()
                .find(|c| c.key == *key && c.seed == *seed)
                .ok_or_else(|| PipelineError::Config(not_in_plan(key, *seed, &cells, s)))?,
        ),
        _ => None,
    };
    create_dir(&s.out)?;
    let mut results: BTreeMap<(String, u64), CellResult> = BTreeMap::new();
    let mut failures = Vec::new();
    // A cell finished without FID gets it added only where the Inception weights are here now.
    let fid_available = metrics::locate_inception_weights(s.inception_weights.as_deref()).is_ok();
    if let Some(cell) = asked_cell {
        let fid_only = match cell.find(&s.out, fid_available) {
            Found::Finished(_) => {
                observer.note(&format!(
                    "reproduce: {} seed {} has finished already in {}",
                    cell.key,
                    cell.seed,
                    s.out.display()
                ));
                return Ok(());
            }
            Found::WithoutFid => true,
            Found::Nothing => false,
        };
        let pending = [Pending { cell, fid_only }];
        run_cells(backend, s, &base, &data_dir, &pending, cells.len() - 1, observer, &mut results, &mut failures)?;
        return if failures.is_empty() { Ok(()) } else { Err(PipelineError::ExperimentsFailed(failures)) };
    }
    let mut pending: Vec<Pending> = Vec::new();
    for cell in &cells {
        match cell.find(&s.out, fid_available) {
            Found::Finished(r) => {
                results.insert((cell.key.clone(), cell.seed), *r);
            }
            Found::WithoutFid => pending.push(Pending { cell, fid_only: true }),
            Found::Nothing => pending.push(Pending { cell, fid_only: false }),
        }
    }
    match &s.action {
        Action::Cell { .. } => unreachable!("run above"),
        Action::Plan => return write_plan(s, &cells, &pending, observer),
        Action::Collect => {
            failures.extend(pending.iter().map(|Pending { cell: c, .. }| {
                format!("{} seed {}: not finished (`{}`)", c.key, c.seed, s.cell_command_line(c))
            }));
        }
        Action::RunAll => {
            let fid_only = pending.iter().filter(|p| p.fid_only).count();
            observer.note(&format!(
                "reproduce: {} experiments, {} already done in {}, {} to run{} on {} images from {}",
                cells.len(),
                cells.len() - pending.len(),
                s.out.display(),
                pending.len(),
                if fid_only > 0 {
                    format!(" ({fid_only} of them finished without FID: only FID to add)")
                } else {
                    String::new()
                },
                base.dataset.display_name(),
                data_dir.display()
            ));
            let done = cells.len() - pending.len();
            run_cells(backend, s, &base, &data_dir, &pending, done, observer, &mut results, &mut failures)?;
        }
    }
    let (all_cells, ..) = plan(&Settings { only: None, ..s.clone() }, &base)?;
    for cell in all_cells.iter().filter(|a| !cells.iter().any(|c| c.cfg == a.cfg)) {
        if let Found::Finished(r) = cell.find(&s.out, false) {
            results.insert((cell.key.clone(), cell.seed), *r);
        }
    }
    let (rows, curves) = shown(s, &base, (rows, curves), &results);
    let lookup = |cfg: &ExperimentConfig| {
        let cell = all_cells.iter().find(|c| c.cfg == *cfg).expect("planned");
        results.get(&(cell.key.clone(), cell.seed))
    };
    let table_settings = if rows.len() == Row::ALL.len() && curves.len() == Curve::ALL.len() {
        Settings { only: None, ..s.clone() }
    } else {
        let shown = rows.iter().map(|&r| Experiment::Row(r)).chain(curves.iter().map(|&c| Experiment::Curve(c)));
        Settings { only: Some(shown.collect()), ..s.clone() }
    };
    let outputs = Outputs { settings: &table_settings, base: &base, cells: &all_cells, lookup: &lookup };
    outputs.write(&rows, &curves, &failures, start.elapsed().as_secs_f64())?;
    match (failures.is_empty(), &s.action) {
        (true, _) => Ok(()),
        (false, Action::Collect) => Err(PipelineError::ExperimentsUnfinished(failures)),
        (false, _) => Err(PipelineError::ExperimentsFailed(failures)),
    }
}

/// The rows and curves the table shows: those asked for, and every other one with a finished
/// cell of its own in `results` (a curve's point that is a row's run is under the row's key:
/// λ_lip = 0.1 finished shows the LCD row), so that running one curve into a reproduction's
/// folder keeps the rest of its table. The table then names itself by the `--only` list that
/// makes it.
fn shown(
    s: &Settings,
    base: &ExperimentConfig,
    (asked_rows, asked_curves): (Vec<Row>, Vec<Curve>),
    results: &BTreeMap<(String, u64), CellResult>,
) -> (Vec<Row>, Vec<Curve>) {
    let finished = |key: String, seed: u64| results.contains_key(&(key, seed));
    let rows = Row::ALL
        .into_iter()
        .filter(|r| asked_rows.contains(r) || s.seeds.clone().any(|seed| finished(r.key().to_string(), seed)))
        .collect();
    let curves = Curve::ALL
        .into_iter()
        .filter(|c| {
            asked_curves.contains(c)
                || s.seeds.clone().any(|seed| c.xs().iter().any(|&x| finished(c.point(base, x, seed).0, seed)))
        })
        .collect();
    (rows, curves)
}

/// A cell to run, or only to add its FID to.
struct Pending<'a> {
    cell: &'a Cell,
    /// Finished without the FID it asks for: score its saved model instead of training again.
    fid_only: bool,
}

/// Runs `pending` (grouped by seed: one partition and one set of evaluation-image FID statistics
/// per seed; within a seed, cells whose clients train alike share them, see
/// [`run_sharing_clients`]), saving each finished cell and naming each failed one; `done` cells
/// came before.
#[allow(clippy::too_many_arguments)]
fn run_cells<B: TrainingOps + ImageOps>(
    backend: &B,
    s: &Settings,
    base: &ExperimentConfig,
    data_dir: &std::path::Path,
    pending: &[Pending],
    mut done: usize,
    observer: &dyn Observer,
    results: &mut BTreeMap<(String, u64), CellResult>,
    failures: &mut Vec<String>,
) -> Result<()> {
    let total = done + pending.len();
    let mut seeds: Vec<u64> = pending.iter().map(|p| p.cell.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    for seed in seeds {
        let mut seed_cfg = base.clone();
        seed_cfg.seed = seed;
        seed_cfg.fid.weights.clone_from(&s.inception_weights);
        let partition = load_partition(&seed_cfg, data_dir)?;
        let fid = Fid::prepare(backend, &seed_cfg, &partition, observer)?;
        let prepared = Prepared { data_dir, partition: &partition, fid: &fid };
        for group in sharing_clients(pending.iter().filter(|p| p.cell.seed == seed)) {
            let keys: Vec<&str> = group.iter().map(|p| p.cell.key.as_str()).collect();
            let numbers = match group.len() {
                1 => format!("{}", done + 1),
                n => format!("{}–{}", done + 1, done + n),
            };
            done += group.len();
            let sharing = if group.len() > 1 { " (one set of clients, a server each)" } else { "" };
            observer.note(&format!("\n[{numbers}/{total}] {} seed {seed}{sharing}", keys.join(", ")));
            // Each cell's report, or why it failed.
            let outcomes: Vec<std::result::Result<Report, String>> = match (&group[..], fid.scorer()) {
                ([Pending { cell, fid_only: true }], Some(scorer)) => {
                    observer.note("finished without FID: adding it from the saved global model");
                    vec![add_fid_to_run(backend, &cell.dir(&s.out), scorer, observer).map_err(|e| e.to_string())]
                }
                ([Pending { cell, .. }], _) => {
                    let outcome = run_on_partition(backend, &cell.cfg, &prepared, &cell.dir(&s.out), observer);
                    vec![outcome.map_err(|e| e.to_string())]
                }
                _ => {
                    let runs: Vec<_> = group.iter().map(|p| (p.cell.cfg.clone(), p.cell.dir(&s.out))).collect();
                    match run_sharing_clients(backend, &runs, &prepared, observer) {
                        Ok(reports) => reports.into_iter().map(Ok).collect(),
                        Err(e) => {
                            let why = format!("{e} (in a run sharing its clients with {})", keys.join(", "));
                            group.iter().map(|_| Err(why.clone())).collect()
                        }
                    }
                }
            };
            for (Pending { cell, .. }, outcome) in group.iter().zip(outcomes) {
                let dir = cell.dir(&s.out);
                let report = match outcome {
                    Ok(report) => report,
                    Err(e) => {
                        // Keep going: one diverged or broken experiment should not cost the others.
                        let why = format!("{} seed {seed}: {e} (its files are in {})", cell.key, dir.display());
                        observer.note(&format!("experiment failed: {why}"));
                        failures.push(why);
                        continue;
                    }
                };
                let result = CellResult::of(&report);
                result.save(&dir)?;
                results.insert((cell.key.clone(), seed), result);
            }
        }
    }
    Ok(())
}

/// `pending` in groups that can share one set of clients (in order of each group's first cell):
/// cells to train whose configs differ only in `[server]` and `[fid]`; a cell that only needs its
/// FID added is a group of its own.
fn sharing_clients<'p, 'c>(pending: impl Iterator<Item = &'p Pending<'c>>) -> Vec<Vec<&'p Pending<'c>>> {
    let mut groups: Vec<Vec<&Pending>> = Vec::new();
    for p in pending {
        let joins =
            |g: &&mut Vec<&Pending>| !p.fid_only && !g[0].fid_only && g[0].cell.cfg.shares_clients_with(&p.cell.cfg);
        match groups.iter_mut().find(joins) {
            Some(group) => group.push(p),
            None => groups.push(vec![p]),
        }
    }
    groups
}

/// Writes `plan.txt` into `s.out`: one command per unfinished cell, each self-contained (it
/// plans again, finds its cell by key and seed, and writes only `cells/<key>/seed-<s>/`).
fn write_plan(s: &Settings, cells: &[Cell], pending: &[Pending], observer: &dyn Observer) -> Result<()> {
    let mut text = format!(
        "# {} of {} experiments to run, one command per line (any order, any machine sharing {}).\n\
         # Then build the table: {} --collect {}\n",
        pending.len(),
        cells.len(),
        s.out.display(),
        s.command_without_folder(),
        s.out.display()
    );
    for Pending { cell, .. } in pending {
        text += &s.cell_command_line(cell);
        text.push('\n');
    }
    let path = s.out.join("plan.txt");
    write_file(&path, text)?;
    observer.note(&format!(
        "reproduce: {} of {} experiments to run; one command each in {}",
        pending.len(),
        cells.len(),
        path.display()
    ));
    Ok(())
}

/// What the table, the curves and the figures are made from.
struct Outputs<'a> {
    settings: &'a Settings,
    base: &'a ExperimentConfig,
    cells: &'a [Cell],
    lookup: &'a Lookup<'a>,
}

impl Outputs<'_> {
    fn write(&self, rows: &[Row], curves: &[Curve], failures: &[String], wall: f64) -> Result<()> {
        let (s, base) = (self.settings, self.base);
        let paper = s.paper_base()?;
        let table = table::build_table(rows, s.seeds.clone(), base, paper.as_ref(), self.lookup);
        let curves = table::build_curves(curves, s.seeds.clone(), base, self.lookup);
        let figures = s.out.join("figures");
        create_dir(&figures)?;
        let mut figure_files = Vec::new();
        // Latent spaces, sample grids and outlier reconstructions of each row's first seed's run.
        for row in rows {
            let cfg = row.config(base, s.seeds.start);
            let cell = self.cells.iter().find(|c| c.cfg == cfg).expect("planned");
            if (self.lookup)(&cell.cfg).is_some() {
                figure_files.extend(charts::copy_row_figures(&cell.cfg, &cell.dir(&s.out), &figures, row.key())?);
            }
        }
        figure_files.extend(charts::write_charts(&figures, &table, &curves)?);
        let curves_json: serde_json::Map<String, serde_json::Value> = curves
            .iter()
            .map(|(c, points)| (c.key().to_string(), serde_json::to_value(points).expect("points serialise")))
            .collect();
        let json = serde_json::json!({
            "dataset": base.dataset.display_name(),
            "protocol": s.protocol_label(),
            "seeds": s.seeds.clone().collect::<Vec<u64>>(),
            "rows": table,
            "curves": curves_json,
            "paper_align_fl_fid_range": PAPER_ALIGN_FID,
            "figures": figure_files,
            "failed": failures,
            "wall_seconds": wall,
        });
        write_file(&s.out.join("table.json"), serde_json::to_string_pretty(&json).expect("a table serialises"))?;
        let machine = self
            .cells
            .iter()
            .find_map(|c| (self.lookup)(&c.cfg))
            .map_or(String::new(), |c| format!(", backend {}, {} threads", c.backend, c.threads));
        let mut md = table::markdown(s, base, &table, &curves, &figure_files, &machine);
        if !failures.is_empty() {
            md += "\n## Experiments missing from the table\n\n";
            for f in failures {
                md += &format!("* {f}\n");
            }
        }
        write_file(&s.out.join("table.md"), md)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_differing_in_the_server_alone_share_their_clients() {
        let settings = Settings { seeds: 0..1, fid: false, ..Settings::new(PathBuf::from("unused")) };
        let (base, _) = base_config(&settings).unwrap();
        let (cells, ..) = plan(&settings, &base).unwrap();
        let mut pending: Vec<Pending> = cells.iter().map(|cell| Pending { cell, fid_only: false }).collect();
        pending[0].fid_only = true;
        let groups = sharing_clients(pending.iter());
        let keys = |g: &Vec<&Pending>| g.iter().map(|p| p.cell.key.clone()).collect::<Vec<String>>();
        let of = |key: &str| groups.iter().map(keys).find(|g| g.iter().any(|k| k == key)).unwrap();
        // The first cell (align-fl) only needs its FID: alone, so the next no-privacy cell leads.
        assert_eq!(of("align-fl"), ["align-fl"]);
        let no_privacy = of("samples-1000");
        for key in ["samples-10000", "server-epochs-1", "server-epochs-20", "server-latent-4", "server-latent-16"] {
            assert!(no_privacy.iter().any(|k| k == key), "{key} not in {no_privacy:?}");
        }
        assert_eq!(no_privacy.len(), 9 + 4 + 3);
        assert_eq!(of("dp-rdp"), ["dp-rdp", "server-latent-dp-4", "server-latent-dp-8", "server-latent-dp-16"]);
        for alone in ["lcd", "fedavg", "heterogeneous", "lambda-1", "epsilon-0.5", "latent-4", "rounds-20"] {
            assert_eq!(of(alone), [alone]);
        }
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), cells.len());
    }

    #[test]
    fn the_plan_runs_each_configuration_once_and_validates_it() {
        let settings = Settings { seeds: 0..2, fid: false, ..Settings::new(PathBuf::from("unused")) };
        let (base, _) = base_config(&settings).unwrap();
        let (cells, rows, curves) = plan(&settings, &base).unwrap();
        assert_eq!((rows.len(), curves.len()), (Row::ALL.len(), Curve::ALL.len()));
        // 8 rows × 2 seeds; per seed 6 ε under each accountant (10 is the dp row), λ ∈ {0.01, 1, 3, 10}
        // (0: align-fl, 0.1: lcd), 9 sample counts (5000 is align-fl), latent 4, 8, 16 for everyone
        // with and without DP-SGD, for the server alone and for the server alone under DP-SGD (2 is
        // align-fl or dp-rdp), 4 server epochs (5 is align-fl) and the 20-round run.
        assert_eq!(cells.len(), 16 + 2 * (6 + 6 + 4 + 9 + 3 + 3 + 3 + 3 + 4 + 1));
        let later = Settings { seeds: 3..5, ..settings.clone() };
        let (cells, _, _) = plan(&later, &base).unwrap();
        assert!(cells.iter().all(|c| (3..5).contains(&c.seed)) && cells.iter().any(|c| c.seed == 4));
        assert!(later.command_line().contains("--first-seed 3 --seeds 2"), "{}", later.command_line());
        assert_eq!((later.seeds_label(), settings.seeds_label()), ("seeds 3–4".into(), "2 seed(s)".into()));
        let dp = cells.iter().find(|c| c.key == "dp-decoder").unwrap();
        assert_eq!(dp.cfg.privacy.scope, vae::GradientScope::DecoderOnly);
        assert_eq!(dp.cfg.privacy.mechanism, crate::Mechanism::DpSgd);
        let het = cells.iter().find(|c| c.key == "heterogeneous").unwrap();
        assert_eq!(het.cfg.client_models.len(), 5);
        let only =
            Settings { only: Some(vec![Experiment::Row(Row::Lcd), Experiment::Curve(Curve::Lambda)]), ..settings };
        let (cells, rows, curves) = plan(&only, &base).unwrap();
        assert_eq!((rows, curves), (vec![Row::Lcd], vec![Curve::Lambda]));
        // lcd × 2 seeds; per seed λ ∈ {0, 0.01, 1, 3, 10} (0.1 is the lcd row).
        assert_eq!(cells.len(), 2 + 2 * 5);
        // λ = 0 is the no-privacy row's run, under its key though that row is not asked for.
        let keys: Vec<&str> = cells.iter().filter(|c| c.seed == 0).map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["lcd", "align-fl", "lambda-0.01", "lambda-1", "lambda-3", "lambda-10"]);
        assert!(only.command_line().contains("--only lcd,lambda"), "{}", only.command_line());
    }
}
