//! The server's side of a deployment: state on disk, one round per call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use federation::{ClientUpdate, RoundOutcome, UpdatePayload};
use serde::{Deserialize, Serialize};
use tensor_kernels::{ImageOps, TrainingOps};
use vae::VaeState;

use super::{config_text, parse_config, Downlink, StateFile};
use crate::experiment::{build_strategy, load_partition, privacy_report, Fid, RoundRecorder};
use crate::out_dir::{create_dir, write_file};
use crate::report::{self, LeftOut, Report, RoundRecord};
use crate::{ExperimentConfig, Mechanism, Observer, PipelineError, Result, StrategyKind};

/// The server's state file (its state directory also holds the run's report, checkpoint and
/// figures).
const SERVER_STATE: StateFile = StateFile { name: "server-state.bin", format: b"align-fl/server\0", version: 1 };

/// What the server keeps between rounds.
#[derive(Serialize, Deserialize)]
struct ServerState {
    /// The experiment (TOML).
    config: String,
    /// Where the server's evaluation data lives.
    data_dir: PathBuf,
    /// Rounds completed.
    round: usize,
    /// The global model after them, with its random streams.
    global: VaeState,
    /// Their records.
    rounds: Vec<RoundRecord>,
    /// Each client's latest privacy report (DP-SGD), by client id.
    client_privacy: Vec<Option<privacy::PrivacySpent>>,
    /// Seconds spent in rounds so far.
    seconds: f64,
}

/// Starts a deployed run of `cfg` (its main strategy; baselines are separate runs): the initial
/// global model into `state_dir`, round 1's downlink to `downlink_out`. Refuses a state
/// directory that already holds a run.
pub fn server_init<B: TrainingOps>(
    backend: &B,
    cfg: &ExperimentConfig,
    data_dir: &Path,
    state_dir: &Path,
    downlink_out: &Path,
) -> Result<()> {
    cfg.validate()?;
    create_dir(state_dir)?;
    if SERVER_STATE.path(state_dir).exists() {
        return Err(PipelineError::Config(format!(
            "{} already holds a server state: give a new run a new state directory",
            state_dir.display()
        )));
    }
    let mut strategy = build_strategy(backend, cfg, cfg.strategy)?;
    let state = ServerState {
        config: config_text(cfg),
        data_dir: data_dir.to_path_buf(),
        round: 0,
        global: strategy.global_model().training_state(),
        rounds: Vec::new(),
        client_privacy: vec![None; cfg.partition.clients],
        seconds: 0.0,
    };
    // The downlink first: where it cannot be written, no state is left to refuse the retry.
    let downlink = Downlink { round: 1, config: state.config.clone(), plan: strategy.configure_round(1) };
    write_file(downlink_out, downlink.encode())?;
    SERVER_STATE.save(state_dir, &state)?;
    crate::metrics_log::start(state_dir)
}

/// One round's input to [`server_round`].
pub struct ServerRound {
    /// The update files that arrived, by client id.
    pub updates: BTreeMap<usize, PathBuf>,
    /// Clients that did not answer, with the reason (a timeout, an error on their side).
    pub no_answer: BTreeMap<usize, String>,
    /// The fewest valid updates the round may go on with (default: a majority of the clients).
    pub min_clients: Option<usize>,
}

/// What [`server_round`] did.
#[derive(Debug)]
pub struct ServerRoundResult {
    /// The round completed.
    pub round: usize,
    /// The run's report after it.
    pub report: Report,
    /// Whether another round follows (its downlink was written).
    pub next_round: bool,
}

/// Runs the next round on the updates that arrived: each is decoded and validated (a client
/// whose update fails is left out, with the error), the round goes on if at least
/// `min_clients` remain, and then aggregates, evaluates, writes the report, checkpoint and
/// figures into `state_dir`, saves the state and writes the next round's downlink to
/// `downlink_out` (removing any stale one after the last round). A refused round changes nothing.
pub fn server_round<B: TrainingOps + ImageOps>(
    backend: &B,
    state_dir: &Path,
    input: &ServerRound,
    downlink_out: &Path,
    observer: &dyn Observer,
) -> Result<ServerRoundResult> {
    let started = Instant::now();
    let mut state: ServerState = SERVER_STATE.load(state_dir)?.ok_or_else(|| {
        PipelineError::Config(format!(
            "{} holds no server state: run `align-fl server init` first",
            state_dir.display()
        ))
    })?;
    let cfg = parse_config(&state.config)?;
    let round = state.round + 1;
    if round > cfg.rounds {
        return Err(PipelineError::Config(format!(
            "the run in {} has finished its {} rounds",
            state_dir.display(),
            cfg.rounds
        )));
    }
    let clients = cfg.partition.clients;
    let mut left_out: Vec<LeftOut> =
        input.no_answer.iter().map(|(&client, reason)| LeftOut { client, reason: reason.clone() }).collect();
    let mut updates = Vec::with_capacity(input.updates.len());
    let mut uplink_bytes = 0;
    for (&client, path) in &input.updates {
        if client >= clients || input.no_answer.contains_key(&client) {
            return Err(PipelineError::Config(format!(
                "update {} names client {client}, which is not a client of this run (ids 0..{clients}) or also \
                 did not answer",
                path.display()
            )));
        }
        // An update that cannot be read (missing, oversized, not a file) leaves its client out.
        let bytes = match data::read_bounded(path, federation::MAX_FRAMED_MESSAGE_BYTES) {
            Ok(bytes) => bytes,
            Err(e) => {
                left_out.push(LeftOut { client, reason: e.to_string() });
                continue;
            }
        };
        match ClientUpdate::decode(&bytes, client) {
            Ok(u) if u.round == round => match misfit(&cfg, &u) {
                Some(reason) => {
                    left_out.push(LeftOut { client, reason: format!("its update does not fit this run: {reason}") })
                }
                None => {
                    uplink_bytes += bytes.len();
                    updates.push(u);
                }
            },
            Ok(u) => {
                left_out.push(LeftOut { client, reason: format!("sent its update of round {}, not {round}", u.round) })
            }
            Err(e) => left_out.push(LeftOut { client, reason: e.to_string() }),
        }
    }
    left_out.sort_by_key(|l| l.client);
    for l in &left_out {
        observer.note(&format!("round {round}: client {} left out: {}", l.client, l.reason));
    }
    let min_clients = input.min_clients.unwrap_or(clients / 2 + 1).max(1);
    if updates.len() < min_clients {
        return Err(PipelineError::Config(format!(
            "round {round}: {} valid update(s), fewer than the {} required (min_clients); nothing was changed, \
             the last good global model stays in {}. Left out: {}",
            updates.len(),
            min_clients,
            state_dir.display(),
            left_out.iter().map(|l| format!("client {}: {}", l.client, l.reason)).collect::<Vec<_>>().join("; ")
        )));
    }
    let mut strategy = build_strategy(backend, &cfg, cfg.strategy)?;
    strategy.global_model().restore(&state.global)?;
    let bars = observer.strategy_started(cfg.strategy, cfg.rounds, clients);
    let server = strategy.aggregate(round, &updates, bars.as_ref()).map_err(|error| {
        bars.finished();
        PipelineError::Training {
            strategy: cfg.strategy.as_str(),
            error,
            kept: format!(
                "nothing was changed: the global model of round {} stays in {}",
                round - 1,
                state_dir.display()
            ),
        }
    })?;
    bars.finished();
    let outcome = RoundOutcome::of(round, uplink_bytes, &updates, server);
    for u in &updates {
        state.client_privacy[u.client_id] = u.privacy.clone();
    }
    let partition = load_partition(&cfg, &state.data_dir)?;
    // Each round is a process of its own: the evaluation images' Inception statistics are
    // computed only in the rounds that score FID.
    let fid = if cfg.fid.enabled && !cfg.fid.scores_round(round, cfg.rounds) {
        let when = match cfg.fid.every {
            0 => "in the final round; fid.every adds more".to_string(),
            every => format!("every {every} rounds and in the final one"),
        };
        Fid::Skipped(format!("round {round} of {} does not score FID: it is scored {when}", cfg.rounds))
    } else {
        Fid::prepare(backend, &cfg, &partition, observer)?
    };
    let recorder = RoundRecorder {
        cfg: &cfg,
        eval: &partition.eval,
        fid: fid.scorer(),
        observer,
        out: state_dir,
        strategy: cfg.strategy,
    };
    let global = strategy.global_model();
    let (record, mu) = recorder.record(global, &outcome, started, left_out)?;
    state.seconds += record.seconds;
    state.rounds.push(record);
    let privacy = state.client_privacy.iter().flatten().cloned().collect();
    // The outlier analysis needs client 0's model, which never leaves client 0 in a deployment.
    let run = recorder.finish(global, state.rounds.clone(), &mu, privacy, None, state.seconds)?;
    let no_baselines = BTreeMap::new();
    let report = Report {
        privacy: privacy_report(&cfg, &run, &no_baselines, false)?,
        config: cfg.clone(),
        backend: backend.name().to_string(),
        threads: rayon::current_num_threads(),
        data_dir: state.data_dir.display().to_string(),
        main: run,
        baselines: no_baselines,
        total_wall_seconds: state.seconds,
        fid_note: fid.skipped_because().map(str::to_owned),
    };
    report::write(state_dir, &report)?;
    // The log anew from the report, so a round run again after a failure below is logged once.
    crate::metrics_log::rewrite(state_dir, &report)?;
    let global = global.training_state();
    // The next downlink before the state: where it cannot be written, the state still expects
    // this round, and running it again on the same updates computes the same round.
    let next_round = round < cfg.rounds;
    if next_round {
        let downlink =
            Downlink { round: round + 1, config: state.config.clone(), plan: strategy.configure_round(round + 1) };
        write_file(downlink_out, downlink.encode())?;
    } else if downlink_out.exists() {
        std::fs::remove_file(downlink_out).map_err(|e| PipelineError::io(downlink_out, e))?;
    }
    state.round = round;
    state.global = global;
    SERVER_STATE.save(state_dir, &state)?;
    Ok(ServerRoundResult { round, report, next_round })
}

/// Why `u` is not what this run's config asks of its client, if it is not: the model part the
/// strategy takes, in the architecture the config gives that client, and under DP-SGD a privacy
/// ledger within the config's (ε, δ). So a client running another config (or updates made for
/// another run) is left out, named, instead of being mixed in under a guarantee it never
/// reported.
fn misfit(cfg: &ExperimentConfig, u: &ClientUpdate) -> Option<String> {
    let k = u.client_id;
    let wanted = cfg.client_model(k).vae();
    let architecture = match (&u.payload, cfg.strategy) {
        (UpdatePayload::Decoder { spec, .. }, StrategyKind::AlignFl) => (*spec != wanted.decoder_spec()).then(|| {
            format!(
                "a decoder from a {}-d latent through {:?} to {}, where the config gives client {k} a {}-d latent \
                 through {:?}",
                spec.latent, spec.hidden, spec.output, wanted.latent, wanted.decoder
            )
        }),
        (UpdatePayload::FullModel { config, .. }, StrategyKind::Fedavg | StrategyKind::Fedprox) => {
            (*config != wanted).then(|| format!("a model of {config:?}, where the config gives client {k} {wanted:?}"))
        }
        (UpdatePayload::Decoder { .. }, strategy) => {
            Some(format!("a decoder alone, where {} takes the whole model", strategy.as_str()))
        }
        (UpdatePayload::FullModel { .. }, _) => {
            Some("its whole model, where ALIGN-FL takes the decoder and prior alone".into())
        }
    };
    let dp = &cfg.privacy;
    let ledger = match (&u.privacy, dp.mechanism) {
        (None, Mechanism::DpSgd) => {
            Some("no DP-SGD privacy report, where the config trains every client with DP-SGD".to_string())
        }
        // The calibration reaches the target in the last round, to rounding.
        (Some(p), Mechanism::DpSgd) if p.delta != dp.delta || p.epsilon > dp.epsilon * (1.0 + 1e-9) => Some(format!(
            "a DP-SGD ledger of ε = {} at δ = {:e}, beyond this run's target of ε = {} at δ = {:e}",
            p.epsilon, p.delta, dp.epsilon, dp.delta
        )),
        _ => None,
    };
    architecture.or(ledger).map(|what| format!("it sent {what}"))
}
