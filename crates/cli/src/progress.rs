//! Progress bars (indicatif) for rounds, client training and server training.

use federation::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use vae::Loss;

/// Bars for one strategy's run: rounds, one per client, and the server.
pub struct Bars {
    multi: MultiProgress,
    rounds: ProgressBar,
    clients: Vec<ProgressBar>,
    server: ProgressBar,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("valid template").progress_chars("=> ")
}

impl Bars {
    /// Bars for `strategy` over `rounds` rounds with `clients` clients.
    pub fn new(strategy: &str, rounds: usize, clients: usize, server_trains: bool) -> Self {
        let multi = MultiProgress::new();
        let rounds = multi.add(ProgressBar::new(rounds as u64));
        rounds.set_style(style("{prefix:>10} round {pos}/{len} [{bar:30}] {elapsed_precise} {msg}"));
        rounds.set_prefix(strategy.to_string());
        let clients = (0..clients)
            .map(|k| {
                let b = multi.add(ProgressBar::new(1));
                b.set_style(style("{prefix:>10} epoch {pos}/{len} [{bar:30}] {msg}"));
                b.set_prefix(format!("client {k}"));
                b
            })
            .collect();
        let server = if server_trains { multi.add(ProgressBar::new(1)) } else { ProgressBar::hidden() };
        server.set_style(style("{prefix:>10} epoch {pos}/{len} [{bar:30}] {msg}"));
        server.set_prefix("server");
        Bars { multi, rounds, clients, server }
    }

    /// Prints a line above the bars (or plainly when not on a terminal).
    pub fn println(&self, line: &str) {
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }

    /// Marks a round done.
    pub fn round_done(&self, summary: &str) {
        self.rounds.inc(1);
        self.rounds.set_message(summary.to_string());
    }

    /// Removes the bars.
    pub fn finish(&self) {
        self.clients.iter().chain([&self.server, &self.rounds]).for_each(|b| b.finish_and_clear());
    }
}

fn loss_message(loss: &Loss) -> String {
    format!("loss {:.2} (rec {:.2}, kl {:.3})", loss.total, loss.reconstruction, loss.kl)
}

impl Progress for Bars {
    fn client_epoch(&self, client: usize, epoch: usize, epochs: usize, loss: &Loss) {
        let b = &self.clients[client];
        b.set_length(epochs as u64);
        b.set_position(epoch as u64);
        b.set_message(loss_message(loss));
    }

    fn server_epoch(&self, epoch: usize, epochs: usize, loss: &Loss) {
        self.server.set_length(epochs as u64);
        self.server.set_position(epoch as u64);
        self.server.set_message(loss_message(loss));
    }
}
