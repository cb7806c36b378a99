//! Errors of the federation crate.

/// What can go wrong in a federated round.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// A client update's bytes do not decode.
    #[error("client update from client {client} does not decode ({reason}); the sender and receiver disagree on the format or the bytes were damaged")]
    MalformedUpdate {
        /// Sender.
        client: usize,
        /// Decoder's message.
        reason: String,
    },
    /// A client update in another version of the wire format.
    #[error(
        "client update from client {client} is in update format version {got}, but this build reads version \
         {reads}: run the same align-fl release on the clients and the server"
    )]
    UpdateVersion {
        /// Sender.
        client: usize,
        /// The version the update carries.
        got: u16,
        /// The version this build reads.
        reads: u16,
    },
    /// A client update decodes but its contents contradict its declared architecture.
    #[error("client update from client {client} is inconsistent: {reason}")]
    InvalidUpdate {
        /// Sender.
        client: usize,
        /// What is wrong.
        reason: String,
    },
    /// Training produced NaN or infinity.
    #[error("round {round}, {who}: {source}. Results up to round {} are kept", round.saturating_sub(1))]
    Diverged {
        /// 1-based round.
        round: usize,
        /// "client k" or "server".
        who: String,
        /// The underlying error.
        source: vae::VaeError,
    },
    /// A configuration that cannot work.
    #[error("invalid federation setup: {0}")]
    Config(String),
    /// An error from the model layer.
    #[error(transparent)]
    Model(#[from] vae::VaeError),
}
