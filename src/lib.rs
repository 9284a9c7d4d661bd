//! nismooth: exact, fast Gaussian denoising of NIfTI image collections.
pub mod filter;
pub mod volume;
