//! ALIGN-FL across machines: each client and the server run one round per process, keeping
//! everything they carry between rounds in a state directory, and exchange framed byte messages
//! that an engine such as Flower moves between them (see `deploy/flower` and
//! `docs/deployment.md`).
//!
//! * [`server_init`] writes the server's state and the first round's [`Downlink`].
//! * [`client_round`] reads a downlink, trains the client one round from its state and writes
//!   the update ([`federation::ClientUpdate`], the same bytes the simulation encodes).
//! * [`server_round`] validates the round's updates, leaves out the clients that failed or did
//!   not answer (if at least `min_clients` remain), aggregates, evaluates, writes the report and
//!   the next downlink.
//!
//! The computation is the simulation's, step for step: the same seeds, the same client and
//! server code, so a deployment's report equals `align-fl run`'s for the same config and seed.

mod client;
mod server;

use std::path::{Path, PathBuf};

use federation::{decode_framed, encode_framed, FrameError, RoundPlan};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use client::{client_round, write_client_shard, ClientData, ClientRoundResult};
pub use server::{server_init, server_round, ServerRound, ServerRoundResult};

use crate::out_dir::write_file;
use crate::{ExperimentConfig, PipelineError, Result};

/// The format name of a [`Downlink`].
pub const DOWNLINK_FORMAT: &[u8; 16] = b"align-fl/round\0\0";
/// The version of the [`Downlink`] layout; raise it whenever it changes shape.
pub const DOWNLINK_FORMAT_VERSION: u16 = 1;

/// What the server sends every client for a round: the experiment (so every site runs the
/// coordinator's config) and the strategy's instructions, which carry the global model where the
/// strategy starts clients from it (FedAvg, FedProx).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Downlink {
    /// 1-based round.
    pub round: usize,
    /// The experiment config, as TOML.
    pub config: String,
    /// The strategy's instructions for the round.
    pub plan: RoundPlan,
}

impl Downlink {
    /// The framed bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode_framed(DOWNLINK_FORMAT, DOWNLINK_FORMAT_VERSION, self)
    }

    /// Reads and decodes a downlink file.
    pub fn read(path: &Path) -> Result<Self> {
        read_framed(path, DOWNLINK_FORMAT, DOWNLINK_FORMAT_VERSION)
    }

    /// The experiment config it carries, validated.
    pub fn experiment(&self) -> Result<ExperimentConfig> {
        parse_config(&self.config)
    }
}

/// A config as the downlink and the state files carry it.
fn config_text(cfg: &ExperimentConfig) -> String {
    toml::to_string(cfg).expect("an experiment config always serialises to TOML")
}

/// The config a downlink or state file carries.
fn parse_config(text: &str) -> Result<ExperimentConfig> {
    let cfg: ExperimentConfig = toml::from_str(text)
        .map_err(|e| PipelineError::Config(format!("the experiment config sent by the server does not parse: {e}")))?;
    cfg.validate()?;
    Ok(cfg)
}

/// Reads a framed file, naming the file in any error.
fn read_framed<T: DeserializeOwned>(path: &Path, format: &[u8; 16], version: u16) -> Result<T> {
    let bytes = data::read_bounded(path, federation::MAX_FRAMED_MESSAGE_BYTES)?;
    decode_framed(format, version, &bytes)
        .map_err(|e: FrameError| PipelineError::Config(format!("{}: {e}", path.display())))
}

/// A file a client or the server keeps between rounds in its state directory: framed bytes with
/// their own format name and layout version.
struct StateFile {
    /// The file's name inside the state directory.
    name: &'static str,
    /// The format name in its header.
    format: &'static [u8; 16],
    /// Its layout version; raise it whenever the state changes shape.
    version: u16,
}

impl StateFile {
    /// Where it lives in `state_dir`.
    fn path(&self, state_dir: &Path) -> PathBuf {
        state_dir.join(self.name)
    }

    /// Writes `state` into `state_dir`.
    fn save<T: Serialize>(&self, state_dir: &Path, state: &T) -> Result<()> {
        write_file(&self.path(state_dir), encode_framed(self.format, self.version, state))
    }

    /// The state in `state_dir`, or `None` where there is none yet.
    fn load<T: DeserializeOwned>(&self, state_dir: &Path) -> Result<Option<T>> {
        let path = self.path(state_dir);
        if !path.exists() {
            return Ok(None);
        }
        read_framed(&path, self.format, self.version).map(Some)
    }
}
