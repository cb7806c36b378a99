//! `align-fl models fetch`: the FID Inception weights from pytorch-fid's release.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use pipeline::models::{fetch_inception, models_dir, InceptionSource};

#[derive(Subcommand)]
pub(crate) enum ModelsCommand {
    /// Put the FID Inception weights where runs find them: download pytorch-fid's release (or
    /// convert a copy with --from), check its published hash, and convert it to
    /// inception-2015-12-05.safetensors.
    #[command(
        after_help = "Examples:\n  align-fl models fetch\n  align-fl models fetch --from ~/Downloads/pt_inception-2015-12-05-6726825d.pth"
    )]
    Fetch {
        /// Convert this PyTorch checkpoint (pytorch-fid's pt_inception-2015-12-05-6726825d.pth)
        /// instead of downloading: for machines without access to GitHub.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Folder to fill (default: $ALIGN_FL_MODELS, else ~/.cache/align-fl/models; runs search both).
        #[arg(long)]
        to: Option<PathBuf>,
        /// Download from this address instead (a mirror of the same file; its hash is still checked).
        #[arg(long, default_value = metrics::PYTORCH_FID_URL)]
        url: String,
    },
}

pub(crate) fn models_command(cmd: ModelsCommand) -> Result<()> {
    let ModelsCommand::Fetch { from, to, url } = cmd;
    let dir = models_dir(to.as_deref())?;
    let bar = ProgressBar::hidden();
    let mut progress = |done: u64, total: Option<u64>| {
        if bar.is_hidden() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("download [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} (eta {eta})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
        }
        bar.set_length(total.unwrap_or(done));
        bar.set_position(done);
    };
    let source = match &from {
        Some(path) => {
            eprintln!("converting {}", path.display());
            InceptionSource::File(path)
        }
        None => {
            eprintln!("downloading {url}");
            InceptionSource::Download { url: &url, progress: &mut progress }
        }
    };
    let fetched = fetch_inception(source, &dir);
    bar.finish_and_clear();
    let fetched = fetched?;
    let what = if fetched.already_present { "already present" } else { "converted and verified" };
    println!("ok  {} ({what}, sha256 {})", fetched.path.display(), metrics::INCEPTION_SHA256);
    match metrics::locate_inception_weights(None) {
        Ok(found) if found == fetched.path => println!("runs compute FID with it"),
        Ok(found) => println!("note: runs use {} first (found earlier in the search)", found.display()),
        Err(_) => {
            println!("note: runs do not search {}; pass --inception-weights {0} or set ALIGN_FL_MODELS", dir.display())
        }
    }
    Ok(())
}
