//! Graph data: the HDF5 layout (`store`), turning raw inputs into a dataset (`ingest`, `build`,
//! `split`, `npy`), the synthetic citation-graph generator (`generate`), partitioning into parts
//! (`partition`, `manifest`), loading a rank's parts (`loader`) and readable summaries (`inspect`).

pub mod build;
pub mod csr;
pub mod features;
pub mod generate;
pub mod ingest;
pub mod inspect;
pub mod loader;
pub mod manifest;
pub mod npy;
pub mod partition;
pub mod split;
pub mod store;
