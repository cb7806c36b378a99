//! `align-fl client round` and `align-fl server init|round`: one side of a run across machines,
//! one round per call, state on disk (see `docs/deployment.md`; `deploy/flower` calls these).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use pipeline::deploy::{client_round, server_init, server_round, ClientData, ServerRound};
use pipeline::{ExperimentConfig, Overrides};
use tensor_kernels::{ImageOps, TrainingOps};

use crate::backend::{dispatch, OnBackend};
use crate::progress::Terminal;
use crate::Machine;

/// A client's side of a deployment.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Train one round: read the server's downlink, train from the state directory on this
    /// client's data, write the update to send back.
    #[command(
        after_help = "Examples:\n  align-fl client round --client 0 --data-dir data --state state/client-0 \\\n    --downlink round.bin --update update.bin\n  align-fl client round --client 0 --images /srv/site-images --state state/client-0 \\\n    --downlink round.bin --update update.bin"
    )]
    Round(ClientRoundArgs),
}

/// `align-fl client round`.
#[derive(Args)]
pub struct ClientRoundArgs {
    /// This client's id (0-based; its shard of the configured partition).
    #[arg(long)]
    client: usize,
    #[command(flatten)]
    data: TrainingImages,
    /// This client's state directory (created in round 1, reused every round after).
    #[arg(long)]
    state: PathBuf,
    /// The server's message for this round.
    #[arg(long)]
    downlink: PathBuf,
    /// Where to write the update.
    #[arg(long)]
    update: PathBuf,
    #[command(flatten)]
    machine: Machine,
}

/// What a deployed client trains on: one of the two.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct TrainingImages {
    /// A data directory holding the run's dataset: the client trains on its shard of the
    /// configured partition (as `align-fl run` does).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The client's own images instead: an IDX image file or a folder of PNGs, 28×28 gray
    /// (`align-fl data shard` writes a shard in this form). Every round must get the same images.
    #[arg(long)]
    images: Option<PathBuf>,
}

impl TrainingImages {
    fn source(&self) -> Result<ClientData<'_>> {
        match (&self.images, &self.data_dir) {
            (Some(images), _) => Ok(ClientData::Images(images)),
            (None, Some(dir)) => Ok(ClientData::Shard(dir)),
            (None, None) => anyhow::bail!("give --data-dir DIR (the run's dataset) or --images PATH (own images)"),
        }
    }
}

impl OnBackend for ClientRoundArgs {
    type Output = ();

    fn run<B: TrainingOps + ImageOps>(self, backend: &B) -> Result<()> {
        let progress = Terminal::default();
        let done = client_round(
            backend,
            self.client,
            self.data.source()?,
            &self.state,
            &self.downlink,
            &self.update,
            &progress,
        )?;
        let what = if done.resent { "resent its saved update of" } else { "trained" };
        println!(
            "client {} {what} round {}: {} bytes to {}",
            self.client,
            done.round,
            done.bytes,
            self.update.display()
        );
        Ok(())
    }
}

/// The server's side of a deployment.
#[derive(Subcommand)]
pub enum ServerCommand {
    /// Start a run: the initial global model into the state directory, round 1's downlink out.
    #[command(
        after_help = "Example:\n  align-fl server init --config configs/quick.toml --state state/server --downlink round.bin"
    )]
    Init(Box<ServerInitArgs>),
    /// Finish a round: validate the updates, aggregate, evaluate, write the report and the next
    /// round's downlink (none after the last round).
    #[command(
        after_help = "Example:\n  align-fl server round --state state/server --update 0=u0.bin --update 1=u1.bin \\\n    --no-answer 2='timed out after 600 s' --downlink round.bin"
    )]
    Round(ServerRoundArgs),
}

/// `align-fl server init`.
#[derive(Args)]
pub struct ServerInitArgs {
    /// Experiment config (TOML); its strategy is the one deployed (baselines run separately).
    #[arg(long)]
    config: PathBuf,
    /// The server's data directory (its evaluation set) [default: config's data_dir, then
    /// $ALIGN_FL_DATA, then ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The server's state directory, which also receives report.json, report.md, the checkpoint
    /// and the figures.
    #[arg(long)]
    state: PathBuf,
    /// Where to write round 1's downlink.
    #[arg(long)]
    downlink: PathBuf,
    #[command(flatten)]
    overrides: Overrides,
}

/// `align-fl server round`.
#[derive(Args)]
pub struct ServerRoundArgs {
    /// The server's state directory.
    #[arg(long)]
    state: PathBuf,
    /// A client's update, as CLIENT=FILE (repeat for each client that answered).
    #[arg(long = "update", value_name = "CLIENT=FILE", value_parser = parse_update)]
    updates: Vec<(usize, PathBuf)>,
    /// A client that did not answer, as CLIENT=REASON (it is named in the report).
    #[arg(long = "no-answer", value_name = "CLIENT=REASON", value_parser = parse_no_answer)]
    no_answer: Vec<(usize, String)>,
    /// The fewest valid updates the round may go on with [default: a majority of the clients].
    #[arg(long)]
    min_clients: Option<usize>,
    /// Where to write the next round's downlink (removed after the last round).
    #[arg(long)]
    downlink: PathBuf,
    #[command(flatten)]
    machine: Machine,
}

impl OnBackend for ServerRoundArgs {
    type Output = ();

    fn run<B: TrainingOps + ImageOps>(self, backend: &B) -> Result<()> {
        let mut updates = BTreeMap::new();
        for (client, path) in self.updates {
            if let Some(first) = updates.insert(client, path) {
                anyhow::bail!("--update {client}=…: client {client} is given twice (also {})", first.display());
            }
        }
        let input =
            ServerRound { updates, no_answer: self.no_answer.into_iter().collect(), min_clients: self.min_clients };
        let done = server_round(backend, &self.state, &input, &self.downlink, &Terminal::default())?;
        let round = done.report.main.rounds.last().expect("a finished round");
        println!(
            "round {}: accuracy {:.4}, F1 {:.4}, {} update(s) left out; report: {}",
            done.round,
            round.accuracy,
            round.f1,
            round.left_out.len(),
            self.state.join("report.md").display()
        );
        if done.next_round {
            println!("next round's downlink: {}", self.downlink.display());
        } else {
            println!("the run is finished");
        }
        Ok(())
    }
}

fn split_assignment(s: &str, what: &str) -> Result<(usize, String), String> {
    let (client, value) = s.split_once('=').ok_or_else(|| format!("{s}: expected CLIENT={what}"))?;
    let client = client.parse().map_err(|_| format!("{s}: the client id {client:?} is not a whole number"))?;
    Ok((client, value.to_string()))
}

fn parse_update(s: &str) -> Result<(usize, PathBuf), String> {
    split_assignment(s, "FILE").map(|(k, v)| (k, PathBuf::from(v)))
}

fn parse_no_answer(s: &str) -> Result<(usize, String), String> {
    split_assignment(s, "REASON")
}

pub fn client_command(cmd: ClientCommand) -> Result<()> {
    match cmd {
        ClientCommand::Round(a) => {
            a.machine.set_threads()?;
            dispatch(a.machine.backend, a)
        }
    }
}

pub fn server_command(cmd: ServerCommand) -> Result<()> {
    match cmd {
        ServerCommand::Init(a) => {
            let mut cfg = ExperimentConfig::load(&a.config)?;
            a.overrides.apply(&mut cfg)?;
            let data_dir = cfg.data_dir(a.data_dir.as_deref());
            // The server's own data directory is where it evaluates; clients use their own.
            let data_dir =
                std::path::absolute(&data_dir).with_context(|| format!("resolving {}", data_dir.display()))?;
            server_init(&tensor_kernels::Cpu::new(), &cfg, &data_dir, &a.state, &a.downlink)?;
            println!("run started in {}; round 1's downlink: {}", a.state.display(), a.downlink.display());
            Ok(())
        }
        ServerCommand::Round(a) => {
            a.machine.set_threads()?;
            dispatch(a.machine.backend, a)
        }
    }
}
