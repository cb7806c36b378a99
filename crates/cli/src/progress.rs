//! Progress on the terminal (indicatif): bars for rounds, client and server epochs, and FID's
//! feature extraction; notes and round lines above them.

use std::sync::Mutex;

use federation::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use metrics::FeatureProgress;
use pipeline::report::RoundRecord;
use pipeline::{Observer, RoundProgress, StrategyKind};
use vae::Loss;

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("valid template").progress_chars("=> ")
}

/// Shows a command's progress on standard error.
#[derive(Default)]
pub struct Terminal {
    /// The bar of the image set Inception is working through.
    images: Mutex<Option<ProgressBar>>,
}

impl FeatureProgress for Terminal {
    fn images_done(&self, what: &str, done: usize, total: usize) {
        let mut bar = self.images.lock().expect("the image bar's lock");
        let b = bar.get_or_insert_with(|| {
            let b = ProgressBar::new(total as u64);
            b.set_style(style("{prefix:>10} [{bar:30}] {pos}/{len} images {elapsed_precise} (eta {eta})"));
            b.set_prefix(format!("FID {what}"));
            b
        });
        b.set_position(done as u64);
        if done >= total {
            b.finish_and_clear();
            *bar = None;
        }
    }
}

impl Observer for Terminal {
    fn note(&self, line: &str) {
        eprintln!("{line}");
    }

    fn strategy_started(&self, strategy: StrategyKind, rounds: usize, clients: usize) -> Box<dyn RoundProgress + '_> {
        Box::new(Bars::new(strategy, rounds, clients))
    }
}

/// Bars for one strategy's run: rounds, one per client, and the server (ALIGN-FL's).
struct Bars {
    multi: MultiProgress,
    rounds: ProgressBar,
    clients: Vec<ProgressBar>,
    server: ProgressBar,
}

impl Bars {
    fn new(strategy: StrategyKind, rounds: usize, clients: usize) -> Self {
        let multi = MultiProgress::new();
        let rounds = multi.add(ProgressBar::new(rounds as u64));
        rounds.set_style(style("{prefix:>10} round {pos}/{len} [{bar:30}] {elapsed_precise} {msg}"));
        rounds.set_prefix(strategy.as_str());
        let clients = (0..clients)
            .map(|k| {
                let b = multi.add(ProgressBar::new(1));
                b.set_style(style("{prefix:>10} epoch {pos}/{len} [{bar:30}] {msg}"));
                b.set_prefix(format!("client {k}"));
                b
            })
            .collect();
        let server =
            if strategy == StrategyKind::AlignFl { multi.add(ProgressBar::new(1)) } else { ProgressBar::hidden() };
        server.set_style(style("{prefix:>10} epoch {pos}/{len} [{bar:30}] {msg}"));
        server.set_prefix("server");
        Bars { multi, rounds, clients, server }
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

impl RoundProgress for Bars {
    fn round_finished(&self, strategy: StrategyKind, r: &RoundRecord) {
        let fid = r.fid.map_or(String::new(), |f| format!(", FID {f:.2}"));
        let line = format!(
            "{} round {}: accuracy {:.4}, F1 {:.4}, decoder Lipschitz {:.3}{fid}, uplink {} B, {:.1} s",
            strategy.as_str(),
            r.round,
            r.accuracy,
            r.f1,
            r.lipschitz_decoder,
            r.uplink_bytes,
            r.seconds
        );
        // Above the bars, or plainly when not on a terminal.
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(&line);
        }
        self.rounds.inc(1);
        self.rounds.set_message(format!("acc {:.4} F1 {:.4} Lip {:.2}", r.accuracy, r.f1, r.lipschitz_decoder));
    }

    fn finished(&self) {
        self.clients.iter().chain([&self.server, &self.rounds]).for_each(|b| b.finish_and_clear());
    }
}
