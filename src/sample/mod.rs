//! Sampling: counter-based randomness (`rng`), uniform neighbour sampling into per-layer blocks
//! (`neighbor`, `block`) and negative sampling (`negative`).

pub mod rng;
