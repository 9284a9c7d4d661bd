//! Stands in for the CUDA backend when nismooth is built without the `cuda`
//! feature: every way in says so, and names the feature that would help.

use crate::filter::{Backend, FilterError, FilterSpec, Shape};
use crate::volume::{DType, Voxels};

const BUILT_WITHOUT: &str =
    "nismooth was built without CUDA support (rebuild with `cargo build --release --features cuda`)";

/// What `--backend auto` asks before it picks a GPU: here, always no.
pub fn probe() -> Result<usize, FilterError> {
    Err(FilterError::Unavailable(BUILT_WITHOUT.into()))
}

/// Cannot be made: `new` always fails.
pub struct CudaBackend {
    never: std::convert::Infallible,
}

impl CudaBackend {
    pub fn new(
        _threads: usize,
        _local_rank: usize,
        _node_ranks: usize,
    ) -> Result<CudaBackend, FilterError> {
        Err(FilterError::Unavailable(BUILT_WITHOUT.into()))
    }

    pub fn describe(&self) -> String {
        match self.never {}
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn smooth(
        &mut self,
        _: Voxels,
        _: Shape,
        _: &FilterSpec,
        _: DType,
    ) -> Result<Voxels, FilterError> {
        match self.never {}
    }
}
