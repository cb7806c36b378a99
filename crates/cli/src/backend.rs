//! `--backend cpu|wgpu|cuda`: runs a job on the chosen `tensor_kernels` backend. GPU backends exist in builds
//! with the crate features `wgpu` / `cuda`; asking for one a build lacks is a clear error.

use anyhow::Result;
use tensor_kernels::{ImageOps, TrainingOps};

/// The numeric backend of a command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendName {
    /// The CPU (gemm crate, rayon).
    #[default]
    Cpu,
    /// CubeCL kernels through wgpu (Vulkan, Metal, DX12; Mesa's lavapipe without a GPU).
    Wgpu,
    /// CubeCL kernels on CUDA.
    Cuda,
}

/// Work that can run on any backend.
pub trait OnBackend: Send {
    /// What the work returns.
    type Output: Send;
    /// Runs the work on `backend`.
    fn run<B: TrainingOps + ImageOps>(self, backend: &B) -> Result<Self::Output>;
}

/// The GPU kernels chosen by `ALIGN_FL_GEMM` / `ALIGN_FL_CONV` (defaults when unset).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn kernels() -> Result<tensor_kernels::cube::Kernels> {
    tensor_kernels::cube::Kernels::from_env().map_err(anyhow::Error::msg)
}

/// Runs `job` on the backend `name`, on a thread of rayon's pool
/// ([`tensor_kernels::on_pool_thread`]: the CPU kernels' parallel loops then start inside the pool).
pub fn dispatch<J: OnBackend>(name: BackendName, job: J) -> Result<J::Output> {
    tensor_kernels::on_pool_thread(move || on_backend(name, job))
}

fn on_backend<J: OnBackend>(name: BackendName, job: J) -> Result<J::Output> {
    match name {
        BackendName::Cpu => job.run(&tensor_kernels::Cpu::new()),
        #[cfg(feature = "wgpu")]
        BackendName::Wgpu => job.run(&tensor_kernels::cube::Wgpu::default_device().with_kernels(kernels()?)),
        #[cfg(not(feature = "wgpu"))]
        BackendName::Wgpu => anyhow::bail!(
            "this build has no wgpu backend: rebuild with `cargo build --release -p align-fl --features wgpu`"
        ),
        #[cfg(feature = "cuda")]
        BackendName::Cuda => match tensor_kernels::cube::cuda_unavailable() {
            Some(reason) => anyhow::bail!("--backend cuda: {reason}"),
            None => job.run(&tensor_kernels::cube::Cuda::default_device().with_kernels(kernels()?)),
        },
        #[cfg(not(feature = "cuda"))]
        BackendName::Cuda => anyhow::bail!(
            "this build has no CUDA backend: rebuild with `cargo build --release -p align-fl --features cuda`"
        ),
    }
}
