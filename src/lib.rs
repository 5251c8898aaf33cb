//! shardsage: MPI-native training of graph neural networks on HDF5 graph shards.
//!
//! The modules follow the data flow: `graph` (ingest, generate, partition, the HDF5 layout),
//! `sample` (counter-based randomness, neighbour and negative sampling), `nn` (GraphSAGE, link
//! predictor, losses, Adam, the flat parameter buffer), `backend` (the seam for hot operations:
//! CPU with rayon, CUDA with NVRTC kernels), `distributed` (the MPI communicator and exchanges), `train`
//! (the training loop, checkpoints, metrics) and `eval` (layer-wise inference and metrics).

pub mod backend;
pub mod distributed;
pub mod error;
pub mod eval;
pub mod graph;
pub mod inspect;
pub mod nn;
pub mod nodemap;
pub mod runtime;
pub mod sample;
pub mod serve;
pub mod train;
pub mod util;
pub mod walk;

pub use error::{Error, Result};
