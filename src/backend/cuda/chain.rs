//! The GPU block chain: a batch's hops sampled, deduplicated and built into blocks on the device,
//! each hop reading the previous hop's device results (`PartSampler::sample_blocks` of
//! `GpuCsrSource`). Two synchronisations per hop (the hop's sample total and its distinct
//! count, which size the next buffers); the host copies come down once, after the last hop.
//! The rule is `NeighborSampler::sample`'s, bit for bit; only a part that holds every node
//! (one rank) can take it.

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::sampler::GpuCsrSource;
use super::{cuda_err, CudaBackend};
use crate::backend::{DeviceBlock, DeviceSampled, PartSampler};
use crate::error::{Error, Result};
use crate::sample::block::{Block, SampledBlocks};
use crate::sample::neighbor::{NeighborSampler, SamplingRule};
use crate::sample::rng::{Purpose, Stream};

impl CudaBackend {
    /// The reverse index, edge destinations and node ids of a block whose CSR (`indptr`,
    /// `indices`) and sources (`sources`, `num_src` of them) are on the device.
    fn finish_block(
        &self,
        sources: &CudaSlice<u64>,
        num_src: usize,
        num_dst: usize,
        indptr: CudaSlice<u32>,
        indices: CudaSlice<u32>,
        num_edges: usize,
    ) -> Result<DeviceBlock<CudaBackend>> {
        let (ne, ns, nd) = (num_edges as u64, num_src as u64, num_dst as u64);
        // One count more than sources, left 0, so the exclusive scan ends with the total.
        let mut counts = self.alloc::<u32>(num_src + 1)?;
        let mut cursor = self.alloc::<u32>(num_src.max(1))?;
        let mut rev_edges = self.alloc::<u32>(num_edges)?;
        let mut edge_dst = self.alloc::<u32>(num_edges)?;
        let mut node_ids = self.alloc::<u32>(num_src)?;
        if ne > 0 {
            let f = self.func("block_rev_count")?;
            let mut b = self.stream.launch_builder(f);
            b.arg(&indices).arg(&ne).arg(&mut counts);
            // SAFETY: every index is a source position below num_src (from the dedup labels).
            unsafe { b.launch(self.threads(ne)) }.map_err(|e| cuda_err("block_rev_count", e))?;
        }
        let (rev_indptr, total) = self.exclusive_scan(&counts, "u32")?;
        if total as usize != num_edges {
            return Err(Error::Cuda(format!(
                "block chain: the reverse index counts {total} edges, the block has {num_edges}"
            )));
        }
        if ne > 0 {
            let f = self.func("block_rev_fill")?;
            let mut b = self.stream.launch_builder(f);
            b.arg(&indices)
                .arg(&ne)
                .arg(&rev_indptr)
                .arg(&mut cursor)
                .arg(&mut rev_edges);
            // SAFETY: each source's cursor stays below its count, so writes land in its segment.
            unsafe { b.launch(self.threads(ne)) }.map_err(|e| cuda_err("block_rev_fill", e))?;
            let f = self.func("block_rev_sort")?;
            let mut b = self.stream.launch_builder(f);
            b.arg(&rev_indptr).arg(&ns).arg(&mut rev_edges);
            // SAFETY: rev_indptr has num_src + 1 offsets into rev_edges.
            unsafe { b.launch(self.warps(ns)) }.map_err(|e| cuda_err("block_rev_sort", e))?;
            let f = self.func("block_edge_dst")?;
            let mut b = self.stream.launch_builder(f);
            b.arg(&indptr).arg(&nd).arg(&mut edge_dst);
            // SAFETY: indptr has num_dst + 1 offsets into the num_edges edges.
            unsafe { b.launch(self.warps(nd)) }.map_err(|e| cuda_err("block_edge_dst", e))?;
        }
        if ns > 0 {
            let f = self.func("narrow_ids")?;
            let mut b = self.stream.launch_builder(f);
            b.arg(sources).arg(&ns).arg(&mut node_ids);
            // SAFETY: `sources` holds at least num_src ids; node_ids has num_src slots.
            unsafe { b.launch(self.threads(ns)) }.map_err(|e| cuda_err("narrow_ids", e))?;
        }
        Ok(DeviceBlock {
            num_src,
            num_dst,
            num_edges,
            indptr,
            indices,
            rev_indptr,
            rev_edges,
            edge_dst,
            node_ids,
            has_reverse: true,
        })
    }

    /// The host copy of a device block whose sources are `sources`.
    fn download_block(
        &self,
        block: &DeviceBlock<CudaBackend>,
        sources: &CudaSlice<u64>,
    ) -> Result<Block> {
        Ok(Block {
            src_nodes: self.to_host(sources)?,
            num_dst: block.num_dst,
            indptr: self.to_host(&block.indptr)?,
            indices: self.to_host(&block.indices)?,
            rev_indptr: self.to_host(&block.rev_indptr)?,
            rev_edges: self.to_host(&block.rev_edges)?,
            edge_dst: self.to_host(&block.edge_dst)?,
        })
    }
}

impl PartSampler<CudaBackend> for GpuCsrSource<'_> {
    fn sample_blocks(
        &self,
        sampler: &NeighborSampler,
        seeds: &[u64],
        epoch: u64,
        step: u64,
    ) -> Result<Option<DeviceSampled<CudaBackend>>> {
        if !self.holds_every_node {
            return Ok(None);
        }
        sampler.check_batch(seeds)?;
        let be = self.backend;
        let csr = &self.csr;
        csr.check_nodes(seeds, "block chain")?;
        let seeds_dev = be.to_device(seeds)?;
        let mut device: Vec<DeviceBlock<CudaBackend>> = Vec::with_capacity(sampler.fanouts.len());
        // Each hop's sources, which are the next hop's frontier.
        let mut sources: Vec<CudaSlice<u64>> = Vec::with_capacity(sampler.fanouts.len());
        for (hop, &fanout) in sampler.fanouts.iter().enumerate() {
            let frontier = sources.last().unwrap_or(&seeds_dev);
            let frontier_len = frontier.len();
            let state = Stream::new(
                sampler.seed,
                epoch,
                step,
                Purpose::NeighborSample as u64 + hop as u64,
            )
            .state();
            // Under `Subgraph` the previous block's destinations keep their edges; only the
            // nodes it added are sampled now (as `NeighborSampler::sample`).
            let kept = match (sampler.rule, device.last()) {
                (SamplingRule::Subgraph, Some(prev)) => Some(prev),
                _ => None,
            };
            let first_new = kept.map_or(0, |b| b.num_dst);
            let kept_edges = kept.map_or(0, |b| b.num_edges);
            let to_sample = frontier.slice(first_new..frontier_len);
            let sampled = be.sample_on_device(csr, &to_sample, fanout, state)?;
            let total = sampled.total as usize;
            if (total + kept_edges) as u64 > u32::MAX as u64 {
                return Err(Error::Other(format!(
                    "neighbour sampling: {} edges in one block exceed the u32 index range",
                    total + kept_edges
                )));
            }
            // Keys: the frontier (distinct) and then the neighbours, deduplicated first-seen.
            let mut keys = be.alloc::<u64>(frontier_len + total)?;
            be.copy_within(frontier, 0, &mut keys, 0, frontier_len)?;
            be.copy_within(&sampled.nbrs, 0, &mut keys, frontier_len, total)?;
            let (unique, labels) = be.dedup_on_device(&keys, frontier_len + total)?;
            let num_src = unique.len();
            let num_dst = frontier_len;
            let mut indptr = be.alloc::<u32>(num_dst + 1)?;
            let mut indices = be.alloc::<u32>(kept_edges + total)?;
            if let Some(prev) = kept {
                be.copy_within(&prev.indptr, 0, &mut indptr, 0, first_new)?;
                be.copy_within(&prev.indices, 0, &mut indices, 0, kept_edges)?;
            }
            {
                let n = (num_dst - first_new) as u64;
                let base = kept_edges as u32;
                let mut tail = indptr.slice_mut(first_new..num_dst + 1);
                let f = be.func("block_indptr")?;
                let mut b = be.stream.launch_builder(f);
                b.arg(&sampled.offsets)
                    .arg(&n)
                    .arg(&base)
                    .arg(&sampled.total)
                    .arg(&mut tail);
                // SAFETY: `tail` has n + 1 slots; `offsets` has n entries (at least one slot).
                unsafe { b.launch(be.threads(n + 1)) }.map_err(|e| cuda_err("block_indptr", e))?;
            }
            be.copy_within(&labels, frontier_len, &mut indices, kept_edges, total)?;
            let block = be.finish_block(
                &unique,
                num_src,
                num_dst,
                indptr,
                indices,
                kept_edges + total,
            )?;
            device.push(block);
            sources.push(unique);
        }
        let mut blocks = Vec::with_capacity(device.len());
        for (block, src) in device.iter().zip(&sources) {
            blocks.push(be.download_block(block, src)?);
        }
        blocks.reverse();
        device.reverse();
        Ok(Some(DeviceSampled {
            blocks: SampledBlocks {
                seeds: seeds.to_vec(),
                blocks,
            },
            device,
        }))
    }
}
