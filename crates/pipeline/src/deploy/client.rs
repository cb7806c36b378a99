//! One client's round in a deployment: downlink in, update out, state kept on disk.

use std::path::Path;

use data::ImageSet;
use federation::ClientPrivacy;
use privacy::DpSgd;
use serde::{Deserialize, Serialize};
use tensor_kernels::{ImageOps, TrainingOps};
use vae::VaeState;

use super::{config_text, Downlink, StateFile};
use crate::experiment::{build_client, calibrate_clients, load_partition};
use crate::out_dir::{create_dir, write_file};
use crate::{ExperimentConfig, Observer, PipelineError, Result};

/// The client's state file.
const CLIENT_STATE: StateFile = StateFile { name: "client-state.bin", format: b"align-fl/client\0", version: 2 };

/// Where a deployed client's training images come from.
#[derive(Clone, Copy, Debug)]
pub enum ClientData<'a> {
    /// Its shard of the config's partition of the datasets in this data directory: the images
    /// the simulation gives it.
    Shard(&'a Path),
    /// Its own images: an IDX image file or a folder of PNGs, 28 × 28 gray.
    Images(&'a Path),
}

impl ClientData<'_> {
    /// Client `client`'s training pixels (n × 784 in [0, 1]).
    fn pixels(self, cfg: &ExperimentConfig, client: usize) -> Result<Vec<f32>> {
        match self {
            ClientData::Shard(dir) => {
                let mut partition = load_partition(cfg, dir)?;
                Ok(std::mem::take(&mut partition.clients[client].samples.pixels))
            }
            ClientData::Images(path) => Ok(ImageSet::read(path)?.into_training_pixels(path)?),
        }
    }
}

/// Writes the images [`ClientData::Shard`] gives client `client` of `cfg`'s partition of the data
/// in `data_dir` as an IDX image file, the form [`ClientData::Images`] reads: a client trains on
/// that file exactly as on its shard. Returns the number of images.
pub fn write_client_shard(cfg: &ExperimentConfig, data_dir: &Path, client: usize, out: &Path) -> Result<usize> {
    check_client_id(cfg, client)?;
    let pixels = ClientData::Shard(data_dir).pixels(cfg, client)?;
    let count = pixels.len() / data::IMAGE_PIXELS;
    // The shard's values are bytes / 255, so rounding recovers the bytes exactly.
    let bytes = pixels.iter().map(|&v| (v * 255.0).round() as u8).collect();
    let array = data::idx::IdxArray { dims: vec![count, data::IMAGE_SIDE, data::IMAGE_SIDE], data: bytes };
    write_file(out, data::idx::encode(&array))?;
    Ok(count)
}

/// Refuses a client id outside the config's clients.
fn check_client_id(cfg: &ExperimentConfig, client: usize) -> Result<()> {
    if client >= cfg.partition.clients {
        return Err(PipelineError::Config(format!(
            "client id {client} is out of range: the config has {} clients (ids 0..{})",
            cfg.partition.clients,
            cfg.partition.clients - 1
        )));
    }
    Ok(())
}

/// What a client keeps between rounds.
#[derive(Serialize, Deserialize)]
struct ClientState {
    /// The client's id.
    client: usize,
    /// The config the run started with (TOML), which every later downlink must repeat.
    config: String,
    /// The SHA-256 of the training pixels, which every later round must train on again.
    images_sha256: String,
    /// The last round trained.
    round: usize,
    /// The model after that round, with its random streams.
    model: VaeState,
    /// DP-SGD's state after that round (its steps, clipping threshold, noise stream).
    dp_sgd: Option<DpSgd>,
    /// The update of that round, sent again if the server asks for the round again.
    update: Vec<u8>,
}

/// What [`client_round`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRoundResult {
    /// The round.
    pub round: usize,
    /// Bytes of the update written.
    pub bytes: usize,
    /// The round had already been trained (the client stopped after it): its saved update was
    /// written again, without training twice.
    pub resent: bool,
}

/// Client `client` runs the round `downlink` describes on its `data`, from the state in
/// `state_dir` (none before round 1), and writes its update to `update_out`.
///
/// The state is saved, with the update, before the update is written: a client that stops after
/// training sends the saved update when asked again, and never trains a round twice (under DP-SGD
/// that would spend privacy the accountant does not count). Every round trains on the images the
/// run started with; other images are refused.
pub fn client_round<B: TrainingOps + ImageOps>(
    backend: &B,
    client: usize,
    data: ClientData<'_>,
    state_dir: &Path,
    downlink: &Path,
    update_out: &Path,
    observer: &dyn Observer,
) -> Result<ClientRoundResult> {
    let message = Downlink::read(downlink)?;
    let cfg = message.experiment()?;
    check_client_id(&cfg, client)?;
    create_dir(state_dir)?;
    let state_path = CLIENT_STATE.path(state_dir);
    let state: Option<ClientState> = CLIENT_STATE.load(state_dir)?;
    let round = message.round;
    if let Some(s) = &state {
        check_continues(s, client, &config_text(&cfg), round, &state_path)?;
        if s.round == round {
            write_file(update_out, &s.update)?;
            return Ok(ClientRoundResult { round, bytes: s.update.len(), resent: true });
        }
    } else if round != 1 {
        return Err(PipelineError::Config(format!(
            "the server asks for round {round}, but {} holds no state: a client joins at round 1, \
             or resumes from the state directory it used",
            state_dir.display()
        )));
    }
    let pixels = data.pixels(&cfg, client)?;
    let images_sha256 = data::pixels_sha256_hex(&pixels);
    if let Some(s) = state.as_ref().filter(|s| s.images_sha256 != images_sha256) {
        return Err(PipelineError::Config(format!(
            "{}: this client's run started on other training images (SHA-256 {}…, these are {}…); a run trains \
             on one set of images, the one its DP-SGD noise is calibrated for. Give the images it started with, \
             or start a new run with a new state directory",
            state_path.display(),
            &s.images_sha256[..12],
            &images_sha256[..12]
        )));
    }
    let n = pixels.len() / data::IMAGE_PIXELS;
    let sigmas = calibrate_clients(&cfg, [n])?;
    let mut trainer = build_client(backend, &cfg, client, pixels, &sigmas)?;
    if let Some(s) = state {
        trainer.model().restore(&s.model)?;
        if let Some(dp_sgd) = s.dp_sgd {
            let dp = &cfg.privacy;
            trainer = trainer.with_dp_sgd(ClientPrivacy { dp_sgd, delta: dp.delta, accountant: dp.accountant });
        }
    }
    let bars = observer.strategy_started(cfg.strategy, cfg.rounds, cfg.partition.clients);
    let update = trainer.fit(round, &message.plan, bars.as_ref());
    bars.finished();
    let update = update.map_err(PipelineError::from)?.encode();
    let (model, dp_sgd) = trainer.into_carried();
    let bytes = update.len();
    let state = ClientState { client, config: config_text(&cfg), images_sha256, round, model, dp_sgd, update };
    CLIENT_STATE.save(state_dir, &state)?;
    write_file(update_out, &state.update)?;
    Ok(ClientRoundResult { round, bytes, resent: false })
}

/// Refuses a downlink that does not continue this client's run: another client's state, another
/// config, or a round that is neither the next nor the last one trained.
fn check_continues(state: &ClientState, client: usize, config: &str, round: usize, path: &Path) -> Result<()> {
    let refuse = |what: String| Err(PipelineError::Config(format!("{}: {what}", path.display())));
    if state.client != client {
        return refuse(format!("this state belongs to client {}, not client {client}", state.client));
    }
    if state.config != config {
        return refuse(
            "the server's experiment config differs from the one this client's run started with; \
             give a new run its own state directory"
                .into(),
        );
    }
    if round != state.round && round != state.round + 1 {
        return refuse(format!(
            "the server asks for round {}, but this client has trained up to round {} (it can train round {} \
             or resend round {})",
            round,
            state.round,
            state.round + 1,
            state.round
        ));
    }
    Ok(())
}
