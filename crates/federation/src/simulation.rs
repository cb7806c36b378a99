//! The round loop: configure, let every client fit (in parallel), encode each update, decode and
//! validate it on the server side, aggregate (on one server, or on several sharing the clients).

use std::time::{Duration, Instant};

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

/// A simulated federation: clients, one server (or several fed the same updates), a round counter.
pub struct Federation<B: TrainingOps> {
    clients: Vec<Client<B>>,
    servers: Vec<Box<dyn Strategy<B>>>,
    round: usize,
}

impl<B: TrainingOps> Federation<B> {
    /// A federation of `clients` (ids must be 0..n in order) under `strategy`.
    pub fn new(clients: Vec<Client<B>>, strategy: Box<dyn Strategy<B>>) -> Result<Self, FederationError> {
        Self::with_servers(clients, vec![strategy])
    }

    /// A federation whose clients' updates go to every one of `servers`, each aggregating them
    /// into its own global model. The clients fit once per round, so this serves only servers that
    /// send the clients the same plan (ALIGN-FL servers differing in their own settings: the
    /// clients never receive a global model); each server then reaches what it would alone.
    pub fn with_servers(clients: Vec<Client<B>>, servers: Vec<Box<dyn Strategy<B>>>) -> Result<Self, FederationError> {
        if clients.is_empty() {
            return Err(FederationError::Config("a federation needs at least one client".into()));
        }
        if servers.is_empty() {
            return Err(FederationError::Config("a federation needs at least one server".into()));
        }
        if let Some((k, c)) = clients.iter().enumerate().find(|(k, c)| c.id() != *k) {
            return Err(FederationError::Config(format!("client at position {k} has id {}", c.id())));
        }
        Ok(Federation { clients, servers, round: 0 })
    }

    /// The (first) server's strategy name.
    pub fn strategy_name(&self) -> &'static str {
        self.servers[0].name()
    }

    /// The (first) server's global model.
    pub fn global_model(&mut self) -> &mut Vae<B> {
        self.servers[0].global_model()
    }

    /// Server `k`'s global model (in the order given to [`Federation::with_servers`]).
    pub fn global_model_of(&mut self, k: usize) -> &mut Vae<B> {
        self.servers[k].global_model()
    }

    /// The clients.
    pub fn clients_mut(&mut self) -> &mut [Client<B>] {
        &mut self.clients
    }

    /// Runs the next round; the (first) server's outcome. On error the global models are left as
    /// the last completed round made them.
    pub fn run_round(&mut self, progress: &dyn Progress) -> Result<RoundOutcome, FederationError> {
        Ok(self.run_round_on_every_server(progress)?.swap_remove(0).0)
    }

    /// Runs the next round: the clients fit once and every server aggregates their updates. Each
    /// server's outcome comes with the time its round would take alone (the clients' fitting
    /// plus its own aggregation). On an error no server has gone past the last completed round,
    /// except those before a server whose aggregation failed: they keep this round's model.
    pub fn run_round_on_every_server(
        &mut self,
        progress: &dyn Progress,
    ) -> Result<Vec<(RoundOutcome, Duration)>, FederationError> {
        let round = self.round + 1;
        let started = Instant::now();
        let plan = self.servers[0].configure_round(round);
        for (k, server) in self.servers.iter_mut().enumerate().skip(1) {
            if server.configure_round(round) != plan {
                return Err(FederationError::Config(format!(
                    "server {k} ({}) plans round {round} otherwise than server 0 ({}): servers that share \
                     clients must send them the same plan",
                    server.name(),
                    self.servers[0].name()
                )));
            }
        }
        let encoded: Vec<Result<Vec<u8>, FederationError>> =
            self.clients.par_iter_mut().map(|c| c.fit(round, &plan, progress).map(|u| u.encode())).collect();
        let mut updates = Vec::with_capacity(encoded.len());
        let mut uplink_bytes = 0;
        for (k, bytes) in encoded.into_iter().enumerate() {
            let bytes = bytes?;
            uplink_bytes += bytes.len();
            updates.push(ClientUpdate::decode(&bytes, k)?);
        }
        let clients_time = started.elapsed();
        let mut outcomes = Vec::with_capacity(self.servers.len());
        for server in &mut self.servers {
            let aggregating = Instant::now();
            let stats = server.aggregate(round, &updates, progress)?;
            let outcome = RoundOutcome::of(round, uplink_bytes, &updates, stats);
            outcomes.push((outcome, clients_time + aggregating.elapsed()));
        }
        self.round = round;
        Ok(outcomes)
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
