//! The ALIGN-FL experiment orchestrator, for command lines and other programs alike.
//!
//! * [`config`]: the TOML experiment schema, validated, and [`Overrides`] from a command line.
//! * [`run_experiment`]: partition → clients → strategy rounds → evaluation → outliers → FID →
//!   checkpoints, returning a typed [`Report`] and writing `report.json` / `report.md`.
//! * [`reproduce`]: the paper's table, curves and figures over seeds, resumable cell by cell.
//! * [`deploy`]: the same run across machines, one round per process with state on disk.
//! * [`models`]: the FID Inception weights, fetched from pytorch-fid's release and converted.
//!
//! On the CPU backend, call these from a thread of rayon's pool
//! ([`tensor_kernels::on_pool_thread`], as the command line does): from outside it, every
//! parallel loop of the kernels is handed over to the pool and back.
//!
//! Progress goes to an [`Observer`] ([`Quiet`] shows nothing); every failure is a
//! [`PipelineError`] that names the setting, file or experiment at fault.
//!
//! ```no_run
//! use pipeline::{run_experiment, ExperimentConfig, Quiet};
//! let cfg = ExperimentConfig::load("configs/quick.toml".as_ref())?;
//! let data_dir = cfg.data_dir(None);
//! let report = run_experiment(&tensor_kernels::Cpu::new(), &cfg, &data_dir, "runs/latest".as_ref(), &Quiet)?;
//! println!("accuracy {:.4}", report.main.final_metrics.accuracy);
//! # Ok::<(), pipeline::PipelineError>(())
//! ```

pub mod config;
pub mod deploy;
mod error;
mod experiment;
mod figures;
mod metrics_log;
pub mod models;
mod observer;
mod out_dir;
mod overrides;
pub mod report;
pub mod reproduce;
mod resources;
mod saved_fid;

pub use config::{ExperimentConfig, Mechanism, StrategyKind};
pub use error::{PipelineError, Result};
pub use experiment::{load_partition, run_experiment, run_on_partition, run_sharing_clients, Fid, Prepared};
pub use figures::FigureKind;
pub use metrics_log::METRICS_LOG;
pub use observer::{Observer, Quiet, RoundProgress};
pub use out_dir::{write_file, OutDir};
pub use overrides::Overrides;
pub use report::Report;
pub use resources::{available_memory, MemoryEstimate};
pub use saved_fid::{add_fid_to_finished_run, add_fid_to_run};
