//! Skip-gram on the GPU: `GpuSgns`, the `walk::sgns::SgnsDevice` that `GraphOps::sgns_device`
//! hands out. Both embedding tables stay on the device for the whole training; each ring
//! position of an episode uploads its buckets once and runs `blocks` launches of
//! `sgns_sub_round` (`kernels/sgns.cu`, one warp per input block); the output rows go through
//! the host only for the ring's shifts between ranks, both tables for reports and the end.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::{cuda_err, CudaBackend};
use crate::error::{Error, Result};
use crate::walk::sgns::{Embeddings, FlatNegatives, RingStep, SgnsDevice};

/// Widest row the kernel takes (its per-warp scratch in shared memory).
pub const SGNS_MAX_DIM: usize = 1024;

struct Buckets {
    start: CudaSlice<u64>,
    input_row: CudaSlice<u32>,
    output_row: CudaSlice<u32>,
    word: CudaSlice<u32>,
}

struct Negatives {
    prob: CudaSlice<f32>,
    alias: CudaSlice<u32>,
    offset: CudaSlice<u64>,
}

/// The tables and an episode's buckets on one GPU.
pub struct GpuSgns<'a> {
    backend: &'a CudaBackend,
    tables: Option<(CudaSlice<f32>, CudaSlice<f32>)>,
    negatives: Option<Negatives>,
    buckets: Option<Buckets>,
}

impl<'a> GpuSgns<'a> {
    pub fn new(backend: &'a CudaBackend, dim: usize) -> Result<Self> {
        if dim == 0 || dim > SGNS_MAX_DIM {
            return Err(Error::config(
                "dim",
                format!("skip-gram on the GPU takes 1 to {SGNS_MAX_DIM} columns, not {dim}"),
            ));
        }
        Ok(GpuSgns {
            backend,
            tables: None,
            negatives: None,
            buckets: None,
        })
    }

    fn tables(&mut self) -> Result<&mut (CudaSlice<f32>, CudaSlice<f32>)> {
        loaded(&mut self.tables)
    }
}

/// The device tables, once `start` has loaded them.
fn loaded(
    tables: &mut Option<(CudaSlice<f32>, CudaSlice<f32>)>,
) -> Result<&mut (CudaSlice<f32>, CudaSlice<f32>)> {
    tables
        .as_mut()
        .ok_or_else(|| Error::Cuda("skip-gram: the tables were not loaded".into()))
}

fn u32_arg(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Cuda(format!("skip-gram: {what} = {v} exceeds u32")))
}

impl SgnsDevice for GpuSgns<'_> {
    fn start(&mut self, emb: &Embeddings, negatives: &FlatNegatives) -> Result<()> {
        let b = self.backend;
        self.tables = Some((b.to_device(&emb.input)?, b.to_device(&emb.output)?));
        self.negatives = Some(Negatives {
            prob: b.to_device(&negatives.prob)?,
            alias: b.to_device(&negatives.alias)?,
            offset: b.to_device(&negatives.offset)?,
        });
        Ok(())
    }

    fn ring_step(&mut self, step: &RingStep<'_>) -> Result<f64> {
        let b = self.backend;
        if step.new_buckets || self.buckets.is_none() {
            self.buckets = Some(Buckets {
                start: b.to_device(step.bucket_start)?,
                input_row: b.to_device(step.input_row)?,
                output_row: b.to_device(step.output_row)?,
                word: b.to_device(step.word)?,
            });
        }
        let blocks = step.blocks;
        let (dim, nblocks) = (u32_arg("dim", step.dim)?, u32_arg("blocks", blocks)?);
        let (ranks, q) = (u32_arg("ranks", step.ranks)?, u32_arg("q", step.q)?);
        let negatives = u32_arg("negatives", step.negatives)?;
        let in_start = b.to_device(step.in_start)?;
        let out_start = b.to_device(step.out_start)?;
        let mut loss = b.alloc::<f64>(blocks * blocks)?;
        let cfg = LaunchConfig {
            grid_dim: (nblocks, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = b.func("sgns_sub_round")?;
        let (lr0, lr1) = step.lr;
        let seed = step.seed;
        // Split borrows: the tables mutably, the rest shared.
        let tables = loaded(&mut self.tables)?;
        let (Some(bk), Some(neg)) = (&self.buckets, &self.negatives) else {
            return Err(Error::Cuda("skip-gram: no negatives loaded".into()));
        };
        for s in 0..nblocks {
            let mut loss_s = loss.slice_mut(s as usize * blocks..(s as usize + 1) * blocks);
            let mut l = b.stream.launch_builder(f);
            l.arg(&mut tables.0)
                .arg(&mut tables.1)
                .arg(&dim)
                .arg(&nblocks)
                .arg(&ranks)
                .arg(&q)
                .arg(&s)
                .arg(&in_start)
                .arg(&out_start)
                .arg(&bk.start)
                .arg(&bk.input_row)
                .arg(&bk.output_row)
                .arg(&bk.word)
                .arg(&negatives)
                .arg(&seed)
                .arg(&neg.prob)
                .arg(&neg.alias)
                .arg(&neg.offset)
                .arg(&lr0)
                .arg(&lr1)
                .arg(&mut loss_s);
            // SAFETY: one 32-thread block per input block; rows and buckets come from the
            // host's layout of these tables (the CPU path indexes the same slices), dim is
            // at most SGNS_MAX_DIM (checked in `new`), loss_s holds `blocks` values.
            unsafe { l.launch(cfg) }.map_err(|e| cuda_err("sgns_sub_round", e))?;
        }
        let losses = b.to_host(&loss)?;
        // Sub-round by sub-round, block by block: the CPU's order of addition.
        let mut total = 0f64;
        for s in 0..blocks {
            total += losses[s * blocks..(s + 1) * blocks].iter().sum::<f64>();
        }
        Ok(total)
    }

    fn output_to_host(&mut self, emb: &mut Embeddings) -> Result<()> {
        let b = self.backend;
        emb.output = b.to_host(&self.tables()?.1)?;
        Ok(())
    }

    fn output_from_host(&mut self, emb: &Embeddings) -> Result<()> {
        let b = self.backend;
        self.tables()?.1 = b.to_device(&emb.output)?;
        Ok(())
    }

    fn tables_to_host(&mut self, emb: &mut Embeddings) -> Result<()> {
        let b = self.backend;
        let (input, output) = self.tables()?;
        emb.input = b.to_host(input)?;
        emb.output = b.to_host(output)?;
        Ok(())
    }
}
