//! The round loop: configure, let every client fit (in parallel), encode each update, decode and
//! validate it on the server side, aggregate.

use rayon::prelude::*;
use tensor_kernels::TrainingOps;
use vae::{Loss, Vae};

use crate::{Client, ClientUpdate, FederationError, ServerStats, Strategy};

/// Callbacks for progress display; every method defaults to doing nothing.
pub trait Progress: Sync {
    /// Client `client` finished local epoch `epoch` of `epochs`.
    fn client_epoch(&self, _client: usize, _epoch: usize, _epochs: usize, _loss: &Loss) {}
    /// The server finished epoch `epoch` of `epochs` on the synthetic pool.
    fn server_epoch(&self, _epoch: usize, _epochs: usize, _loss: &Loss) {}
}

/// A [`Progress`] that shows nothing.
pub struct Silent;
impl Progress for Silent {}

/// What one round did.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundOutcome {
    /// 1-based round.
    pub round: usize,
    /// Bytes of all encoded client updates.
    pub uplink_bytes: usize,
    /// Each client's last-epoch training loss, as its update reports it (None under DP-SGD).
    pub client_losses: Vec<Option<Loss>>,
    /// What the server did.
    pub server: ServerStats,
    /// Each client's privacy report (DP-SGD clients only).
    pub client_privacy: Vec<Option<privacy::PrivacySpent>>,
}

/// A simulated federation: clients, a strategy, a round counter.
pub struct Federation<B: TrainingOps> {
    clients: Vec<Client<B>>,
    strategy: Box<dyn Strategy<B>>,
    round: usize,
}

impl<B: TrainingOps> Federation<B> {
    /// A federation of `clients` (ids must be 0..n in order) under `strategy`.
    pub fn new(clients: Vec<Client<B>>, strategy: Box<dyn Strategy<B>>) -> Result<Self, FederationError> {
        if clients.is_empty() {
            return Err(FederationError::Config("a federation needs at least one client".into()));
        }
        if let Some((k, c)) = clients.iter().enumerate().find(|(k, c)| c.id() != *k) {
            return Err(FederationError::Config(format!("client at position {k} has id {}", c.id())));
        }
        Ok(Federation { clients, strategy, round: 0 })
    }

    /// The strategy's name.
    pub fn strategy_name(&self) -> &'static str {
        self.strategy.name()
    }

    /// The global model.
    pub fn global_model(&mut self) -> &mut Vae<B> {
        self.strategy.global_model()
    }

    /// The clients.
    pub fn clients_mut(&mut self) -> &mut [Client<B>] {
        &mut self.clients
    }

    /// Runs the next round. On error the global model is left as the last completed round made it.
    pub fn run_round(&mut self, progress: &dyn Progress) -> Result<RoundOutcome, FederationError> {
        let round = self.round + 1;
        let plan = self.strategy.configure_round(round);
        let encoded: Vec<Result<Vec<u8>, FederationError>> =
            self.clients.par_iter_mut().map(|c| c.fit(round, &plan, progress).map(|u| u.encode())).collect();
        let mut updates = Vec::with_capacity(encoded.len());
        let mut uplink_bytes = 0;
        for (k, bytes) in encoded.into_iter().enumerate() {
            let bytes = bytes?;
            uplink_bytes += bytes.len();
            updates.push(ClientUpdate::decode(&bytes, k)?);
        }
        let server = self.strategy.aggregate(round, &updates, progress)?;
        self.round = round;
        Ok(RoundOutcome::of(round, uplink_bytes, &updates, server))
    }
}

impl RoundOutcome {
    /// Round `round`'s outcome from the updates the server aggregated (`uplink_bytes` encoded).
    pub fn of(round: usize, uplink_bytes: usize, updates: &[ClientUpdate], server: ServerStats) -> Self {
        RoundOutcome {
            round,
            uplink_bytes,
            client_losses: updates.iter().map(|u| u.train_loss).collect(),
            client_privacy: updates.iter().map(|u| u.privacy.clone()).collect(),
            server,
        }
    }
}
