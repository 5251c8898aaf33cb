//! Where a training step's input feature rows come from.
//!
//! Either resident on the backend's device (the rank's own rows and its cache of remote rows,
//! uploaded once; a step gathers its rows there and scatters in only those fetched from other
//! ranks), or gathered on the host each step and uploaded (through page-locked memory on a GPU).
//! Both give the same matrix, bit for bit. On the CPU backend the host path reads the rows in
//! place, so residency would only duplicate them and `auto` never chooses it there.

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, PartSampler};
use crate::distributed::graph::{DistGraph, FETCHED};
use crate::error::{Error, Result};

const GIB: f64 = (1u64 << 30) as f64;

/// Where a step's input feature rows come from when the backend has device memory of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FeaturePlacement {
    /// On the device when the rank's rows and its cached remote rows fit beside the step's
    /// working memory (the log says which, and why); on the host otherwise.
    Auto,
    /// On the device; an error when they do not fit.
    Device,
    /// Gathered on the host each step and uploaded.
    Host,
}

/// Device memory left free for a step's blocks, activations and gradients (and the caching
/// allocator's slack) when deciding residency: a fifth of the device, at least 4 GiB. A step of
/// OGB's reference model on ogbl-citation2 needs well under 2 GiB.
pub fn step_reserve_bytes(total: usize) -> usize {
    (total / 5).max(4 << 30)
}

/// Whether a resident table of `need` bytes fits in `free` bytes of a `total`-byte device.
pub fn fits_on_device(need: usize, free: usize, total: usize) -> bool {
    need.checked_add(step_reserve_bytes(total))
        .is_some_and(|n| n <= free)
}

/// A step's source of input feature rows.
pub struct InputFeatures<B: Backend> {
    /// Owned rows, then cached remote rows, on the backend; `None` on the host path.
    resident: Option<B::F>,
}

impl<B: Backend> InputFeatures<B> {
    /// Decides where the rows live (logging the decision and its reason on a device) and uploads
    /// them when they are to be resident.
    pub fn new(backend: &B, graph: &DistGraph, placement: FeaturePlacement) -> Result<Self> {
        let (owned, cached) = graph.resident_features();
        let elems = owned.len() + cached.len();
        let need = elems * std::mem::size_of::<f32>();
        let memory = backend.device_memory()?;
        let what = format!(
            "input features ({} owned + {} cached rows x {}, {:.2} GiB)",
            graph.part.num_local_nodes(),
            graph.cache_len(),
            graph.feature_dim(),
            need as f64 / GIB
        );
        let resident = match (placement, memory) {
            (FeaturePlacement::Host, _) => {
                if memory.is_some() {
                    log::info!("{what}: gathered on the host each step (--features-on host)");
                }
                false
            }
            (FeaturePlacement::Device, _) => true,
            (FeaturePlacement::Auto, None) => false,
            (FeaturePlacement::Auto, Some((free, total))) => {
                let fits = fits_on_device(need, free, total);
                if !fits {
                    log::warn!(
                        "{what} do not fit on {} ({:.2} GiB free of {:.2} GiB, {:.2} GiB kept for \
                         the step): rows are gathered on the host into page-locked memory and \
                         uploaded each step",
                        backend.name(),
                        free as f64 / GIB,
                        total as f64 / GIB,
                        step_reserve_bytes(total) as f64 / GIB
                    );
                }
                fits
            }
        };
        // A table without rows cannot serve a gather (and there is nothing to keep resident).
        if !resident || elems == 0 {
            return Ok(InputFeatures { resident: None });
        }
        let table = backend
            .upload_with(elems, &mut |dst: &mut [f32]| {
                dst[..owned.len()].copy_from_slice(owned);
                dst[owned.len()..].copy_from_slice(cached);
                Ok(())
            })
            .map_err(|e| match placement {
                FeaturePlacement::Device => Error::Other(format!(
                    "{what} cannot be placed on {} (--features-on device): {e}",
                    backend.name()
                )),
                _ => e,
            })?;
        let free_after = backend.device_memory()?.map(|(f, _)| f as f64 / GIB);
        log::info!(
            "{what}: resident on {}{}",
            backend.name(),
            free_after
                .map(|f| format!(", {f:.2} GiB free after"))
                .unwrap_or_default()
        );
        Ok(InputFeatures {
            resident: Some(table),
        })
    }

    /// Whether the rows live on the backend.
    pub fn is_resident(&self) -> bool {
        self.resident.is_some()
    }

    /// The `ids.len() x feature_dim` input matrix of `ids` on the backend. A collective: rows
    /// neither owned nor cached are fetched from their owners.
    pub fn gather(&self, backend: &B, graph: &DistGraph, ids: &[u64]) -> Result<B::F> {
        let dim = graph.feature_dim();
        let Some(table) = &self.resident else {
            return backend.upload_with(ids.len() * dim, &mut |out: &mut [f32]| {
                graph.fetch_features_into(ids, out)
            });
        };
        let mut at = graph.locate_features(ids)?;
        let mut out = backend.zeros(ids.len() * dim)?;
        if dim == 0 {
            return Ok(out);
        }
        // Fetched rows gather row 0 first and are overwritten by the scatter.
        at.rows
            .iter_mut()
            .filter(|r| **r == FETCHED)
            .for_each(|r| *r = 0);
        backend.gather_rows(table, dim, &backend.upload_u32(&at.rows)?, &mut out)?;
        if !at.fetched_pos.is_empty() {
            let fetched = backend.upload(&at.fetched)?;
            let positions = backend.upload_u32(&at.fetched_pos)?;
            backend.scatter_rows(&fetched, dim, &positions, &mut out)?;
        }
        Ok(out)
    }
}

/// The backend's sampler over `part` when there is device memory for its adjacency beside the
/// step (see `features::fits_on_device`); `None` (host sampling, with the reason logged) otherwise.
pub fn device_sampler<'a, B: Backend>(
    backend: &'a B,
    part: &'a crate::graph::store::GraphPart,
) -> Result<Option<Box<dyn PartSampler<B> + 'a>>> {
    let Some((free, total)) = backend.device_memory()? else {
        return Ok(None);
    };
    let need = part.indptr.len() * 8 + part.indices.len() * 4;
    if !fits_on_device(need, free, total) {
        log::warn!(
            "the adjacency of this rank ({:.2} GiB) does not fit on {} beside the step \
             ({:.2} GiB free): sampling on the host",
            need as f64 / (1u64 << 30) as f64,
            backend.name(),
            free as f64 / (1u64 << 30) as f64
        );
        return Ok(None);
    }
    let sampler = backend.part_sampler(part)?;
    if sampler.is_some() {
        log::info!(
            "sampling this rank's {} nodes on {} ({:.2} GiB adjacency)",
            part.num_local_nodes(),
            backend.name(),
            need as f64 / (1u64 << 30) as f64
        );
    }
    Ok(sampler)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residency_leaves_room_for_the_step() {
        let gib = 1usize << 30;
        // An 80 GiB device keeps 16 GiB for the step.
        assert!(fits_on_device(60 * gib, 77 * gib, 80 * gib));
        assert!(!fits_on_device(62 * gib, 77 * gib, 80 * gib));
        // A small device keeps at least 4 GiB.
        assert_eq!(step_reserve_bytes(8 * gib), 4 * gib);
        assert!(fits_on_device(3 * gib, 7 * gib, 8 * gib));
        assert!(!fits_on_device(4 * gib, 7 * gib, 8 * gib));
        assert!(!fits_on_device(usize::MAX, usize::MAX, 8 * gib));
    }
}
