//! GPU neighbour sampling: a part's CSR on the device (`DeviceCsr`), the device exclusive scan,
//! `sample_neighbors` (the rule of `sample::neighbor::sample_node`, bit for bit), first-seen
//! deduplication (`dedup_relabel`), the hash probe that checks the device hash against
//! `sample::rng`, and `GpuCsrSource`, the `NeighborSource` built from them. The backend traits
//! are elsewhere; `graph` hands this sampler out.

use cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};

use super::kernels::{SCAN_THREADS, SCAN_TILE};
use super::{cuda_err, CudaBackend};
use crate::error::{Error, Result};
use crate::sample::neighbor::NeighborSource;
use crate::sample::rng::Stream;

/// One hop sampled on the device: per node its count, their exclusive scan and total, and the
/// concatenated neighbours (global ids).
pub(super) struct SampledHop {
    pub counts: CudaSlice<u64>,
    pub offsets: CudaSlice<u64>,
    pub total: u64,
    pub nbrs: CudaSlice<u64>,
}

/// A part's CSR on the device, for the GPU neighbour sampler.
pub struct DeviceCsr {
    pub first_node: u64,
    pub num_nodes: usize,
    pub(super) indptr: CudaSlice<u64>,
    pub(super) indices: CudaSlice<u32>,
}

impl DeviceCsr {
    /// Refuses nodes outside the CSR (the sampling kernels do not check), naming `what` asked.
    pub(super) fn check_nodes(&self, nodes: &[u64], what: &str) -> Result<()> {
        let last = self.first_node + self.num_nodes as u64;
        match nodes.iter().find(|&&n| n < self.first_node || n >= last) {
            Some(&n) => Err(Error::Cuda(format!(
                "{what}: node {n} is outside the CSR's nodes [{}, {last})",
                self.first_node
            ))),
            None => Ok(()),
        }
    }
}

impl CudaBackend {
    /// Uploads a CSR over the nodes `first_node ..` (`indptr` has one entry more than nodes).
    pub fn upload_csr(
        &self,
        first_node: u64,
        indptr: &[u64],
        indices: &[u32],
    ) -> Result<DeviceCsr> {
        if indptr.is_empty() || indptr.last().copied() != Some(indices.len() as u64) {
            return Err(Error::Cuda(format!(
                "CSR: indptr ends at {:?}, indices has {} entries",
                indptr.last(),
                indices.len()
            )));
        }
        Ok(DeviceCsr {
            first_node,
            num_nodes: indptr.len() - 1,
            indptr: self.to_device(indptr)?,
            indices: self.to_device(indices)?,
        })
    }

    /// Exclusive scan of `counts` on the device (kernels `scan_tiles_<suffix>`,
    /// `scan_sums_<suffix>`, `scan_add_<suffix>`); returns the offsets and the total.
    pub(super) fn exclusive_scan<T>(
        &self,
        counts: &CudaSlice<T>,
        suffix: &str,
    ) -> Result<(CudaSlice<T>, T)>
    where
        T: DeviceRepr + ValidAsZeroBits + Default + Clone,
    {
        let n = counts.len() as u64;
        let tiles = n.div_ceil(SCAN_TILE).max(1);
        let mut out = self.alloc::<T>(counts.len().max(1))?;
        let mut tile_sums = self.alloc::<T>(tiles as usize)?;
        let mut total = self.alloc::<T>(1)?;
        let block = LaunchConfig {
            grid_dim: (tiles as u32, 1, 1),
            block_dim: (SCAN_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let single = LaunchConfig {
            grid_dim: (1, 1, 1),
            ..block
        };
        let name = format!("scan_tiles_{suffix}");
        let f = self.func(&name)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(counts).arg(&mut out).arg(&mut tile_sums).arg(&n);
        // SAFETY: one block per tile of SCAN_TILE items; buffers sized for n and the tiles.
        unsafe { b.launch(block) }.map_err(|e| cuda_err(&name, e))?;
        let name = format!("scan_sums_{suffix}");
        let f = self.func(&name)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&mut tile_sums).arg(&tiles).arg(&mut total);
        // SAFETY: one block summing `tiles` tile totals into `total`.
        unsafe { b.launch(single) }.map_err(|e| cuda_err(&name, e))?;
        let name = format!("scan_add_{suffix}");
        let f = self.func(&name)?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&mut out).arg(&tile_sums).arg(&n);
        // SAFETY: one thread per item of `out`, reading its tile's offset.
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err(&name, e))?;
        let total = self.to_host(&total)?[0].clone();
        Ok((out, total))
    }

    /// Samples the neighbours of `nodes` (all owned by `csr`) with the rule of
    /// `sample::neighbor::sample_node` and the folded stream state `state` (`Stream::state`):
    /// returns the per-node counts and the concatenated neighbours, as `NeighborSource` does.
    pub fn sample_neighbors(
        &self,
        csr: &DeviceCsr,
        nodes: &[u64],
        fanout: i32,
        state: u64,
    ) -> Result<(Vec<u32>, Vec<u64>)> {
        csr.check_nodes(nodes, "GPU sampling")?;
        if nodes.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let d_nodes = self.to_device(nodes)?;
        let hop = self.sample_on_device(csr, &d_nodes.slice(..), fanout, state)?;
        let counts: Vec<u32> = self
            .to_host(&hop.counts)?
            .iter()
            .map(|&c| c as u32)
            .collect();
        Ok((counts, self.to_host(&hop.nbrs)?))
    }

    /// `sample_neighbors` with the nodes, counts and neighbours left on the device. The nodes
    /// must lie in the CSR (the kernels do not check). One synchronisation: the total count.
    pub(super) fn sample_on_device(
        &self,
        csr: &DeviceCsr,
        nodes: &CudaView<'_, u64>,
        fanout: i32,
        state: u64,
    ) -> Result<SampledHop> {
        let n = nodes.len() as u64;
        let mut counts = self.alloc::<u64>(nodes.len())?;
        if n > 0 {
            let f = self.func("sample_counts")?;
            let mut b = self.stream.launch_builder(f);
            b.arg(&csr.indptr)
                .arg(&csr.first_node)
                .arg(nodes)
                .arg(&n)
                .arg(&fanout)
                .arg(&mut counts);
            // SAFETY: the caller guarantees every node is inside the CSR.
            unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("sample_counts", e))?;
        }
        let (offsets, total) = self.exclusive_scan(&counts, "u64")?;
        let mut nbrs = self.alloc::<u64>(total as usize)?;
        if total > 0 {
            let f = self.func("sample_neighbors")?;
            let mut b = self.stream.launch_builder(f);
            b.arg(&csr.indptr)
                .arg(&csr.indices)
                .arg(&csr.first_node)
                .arg(nodes)
                .arg(&n)
                .arg(&fanout)
                .arg(&state)
                .arg(&offsets)
                .arg(&mut nbrs);
            // SAFETY: `nbrs` holds the sum of the counts; `offsets` is their exclusive scan.
            unsafe { b.launch(self.warps(n)) }.map_err(|e| cuda_err("sample_neighbors", e))?;
        }
        Ok(SampledHop {
            counts,
            offsets,
            total,
            nbrs,
        })
    }

    /// First-seen deduplication on the device: the distinct values of `keys` in order of first
    /// occurrence, and for every position the index of its key among them. No key may be
    /// `u64::MAX` (the table's empty marker).
    pub fn dedup_relabel(&self, keys: &[u64]) -> Result<(Vec<u64>, Vec<u32>)> {
        if keys.contains(&u64::MAX) {
            return Err(Error::Cuda("dedup: key u64::MAX is reserved".into()));
        }
        let d_keys = self.to_device(keys)?;
        let (unique, labels) = self.dedup_on_device(&d_keys, keys.len())?;
        Ok((self.to_host(&unique)?, self.to_host(&labels)?))
    }

    /// `dedup_relabel` of the first `n` keys of `keys`, left on the device. One
    /// synchronisation: the number of distinct keys (the length of the first result).
    pub(super) fn dedup_on_device(
        &self,
        keys: &CudaSlice<u64>,
        n: usize,
    ) -> Result<(CudaSlice<u64>, CudaSlice<u32>)> {
        if n == 0 {
            return Ok((self.alloc(0)?, self.alloc(0)?));
        }
        if n >= u32::MAX as usize / 2 {
            return Err(Error::Cuda(format!("dedup: {n} keys exceed u32 positions")));
        }
        let d_keys = keys.slice(..n);
        let n = n as u64;
        let capacity = (2 * n).next_power_of_two();
        let mut table_keys = self.alloc::<u64>(capacity as usize)?;
        let mut table_pos = self.alloc::<u32>(capacity as usize)?;
        let mut slot_of = self.alloc::<u32>(n as usize)?;
        let mut first = self.alloc::<u32>(n as usize)?;
        let f = self.func("dedup_clear")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&mut table_keys).arg(&mut table_pos).arg(&capacity);
        // SAFETY: table buffers have `capacity` slots; capacity is a power of two >= 2n.
        unsafe { b.launch(self.threads(capacity)) }.map_err(|e| cuda_err("dedup_clear", e))?;
        let f = self.func("dedup_insert")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&d_keys)
            .arg(&n)
            .arg(&mut table_keys)
            .arg(&mut table_pos)
            .arg(&capacity)
            .arg(&mut slot_of);
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("dedup_insert", e))?;
        let f = self.func("dedup_flags")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&slot_of).arg(&table_pos).arg(&n).arg(&mut first);
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("dedup_flags", e))?;
        let (new_pos, unique) = self.exclusive_scan(&first, "u32")?;
        let mut unique_keys = self.alloc::<u64>(unique as usize)?;
        let mut labels = self.alloc::<u32>(n as usize)?;
        let f = self.func("dedup_emit")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&d_keys)
            .arg(&slot_of)
            .arg(&table_pos)
            .arg(&new_pos)
            .arg(&n)
            .arg(&mut unique_keys)
            .arg(&mut labels);
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("dedup_emit", e))?;
        Ok((unique_keys, labels))
    }
}

impl CudaBackend {
    /// The counter-based hash evaluated by the device's `common.cuh`, for checking it against
    /// `sample::rng`: per id, `hash(seed, epoch, step, purpose, id, k)`, `below(that, bound)` and
    /// `unit_f32(that)`.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub fn hash_probe(
        &self,
        seed: u64,
        epoch: u64,
        step: u64,
        purpose: u64,
        ids: &[u64],
        k: u64,
        bound: u64,
    ) -> Result<(Vec<u64>, Vec<u64>, Vec<f32>)> {
        if ids.is_empty() {
            return Ok((Vec::new(), Vec::new(), Vec::new()));
        }
        let n = ids.len() as u64;
        let d_ids = self.to_device(ids)?;
        let mut hashes = self.alloc::<u64>(ids.len())?;
        let mut belows = self.alloc::<u64>(ids.len())?;
        let mut units = self.alloc::<f32>(ids.len())?;
        let f = self.func("hash_probe")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&seed)
            .arg(&epoch)
            .arg(&step)
            .arg(&purpose)
            .arg(&d_ids)
            .arg(&n)
            .arg(&k)
            .arg(&bound)
            .arg(&mut hashes)
            .arg(&mut belows)
            .arg(&mut units);
        // SAFETY: three outputs of `n` elements.
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("hash_probe", e))?;
        Ok((
            self.to_host(&hashes)?,
            self.to_host(&belows)?,
            self.to_host(&units)?,
        ))
    }
}

/// A `NeighborSource` over a part's CSR on the GPU (the owned nodes of a rank), and the block
/// chain (`chain`) when the part holds every node of the graph.
pub struct GpuCsrSource<'a> {
    pub backend: &'a CudaBackend,
    pub csr: DeviceCsr,
    /// The part is the whole graph (one rank), so every hop stays on the device.
    pub holds_every_node: bool,
}

impl NeighborSource for GpuCsrSource<'_> {
    fn sample_neighbors(
        &self,
        nodes: &[u64],
        fanout: i32,
        stream: Stream,
        out_counts: &mut Vec<u32>,
        out_nbrs: &mut Vec<u64>,
    ) -> Result<()> {
        let (counts, nbrs) =
            self.backend
                .sample_neighbors(&self.csr, nodes, fanout, stream.state())?;
        *out_counts = counts;
        *out_nbrs = nbrs;
        Ok(())
    }

    fn relabel(&self, frontier: &[u64], nbrs: &[u64]) -> Result<Option<(Vec<u64>, Vec<u32>)>> {
        let mut keys = Vec::with_capacity(frontier.len() + nbrs.len());
        keys.extend_from_slice(frontier);
        keys.extend_from_slice(nbrs);
        let (sources, mut labels) = self.backend.dedup_relabel(&keys)?;
        Ok(Some((sources, labels.split_off(frontier.len()))))
    }
}
