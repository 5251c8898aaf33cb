//! The CUDA backend's `GraphOps`: row gathers and scatters (indices outside the buffer are
//! flagged by the kernel and reported from the host), the mean aggregation over a block and its
//! backward (one warp per row), and the GPU neighbour sampler over a part (`sampler`).

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::sampler::GpuCsrSource;
use super::sgns::GpuSgns;
use super::walk::GpuTrials;
use super::{cuda_err, dim_u32, CudaBackend};
use crate::backend::{checks, AggLayout, DeviceBlock, GraphOps, PartSampler};
use crate::error::Result;
use crate::graph::store::GraphPart;
use crate::walk::sgns::SgnsDevice;
use crate::walk::TrialScanner;

impl GraphOps for CudaBackend {
    fn gather_rows(
        &self,
        table: &CudaSlice<f32>,
        dim: usize,
        rows: &CudaSlice<u32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let table_rows = checks::gather_rows(table.len(), dim, rows.len(), out.len())? as u64;
        if rows.is_empty() || dim == 0 {
            return Ok(());
        }
        let mut bad = self.alloc::<u32>(1)?;
        let (n, d) = (rows.len() as u64, dim_u32("gather_rows", dim)?);
        let f = self.func("gather_rows")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(table)
            .arg(&table_rows)
            .arg(rows)
            .arg(&n)
            .arg(&d)
            .arg(out)
            .arg(&mut bad);
        // SAFETY: out is rows x dim; the kernel skips (and flags) rows outside the table.
        unsafe { b.launch(self.warps(n)) }.map_err(|e| cuda_err("gather_rows", e))?;
        if self.flag_set(&bad)? {
            let host_rows = self.to_host(rows)?;
            let r = host_rows
                .iter()
                .find(|&&r| r as u64 >= table_rows)
                .copied()
                .unwrap_or(0);
            return Err(checks::row_outside_table(r, table_rows));
        }
        Ok(())
    }

    fn scatter_rows(
        &self,
        src: &CudaSlice<f32>,
        dim: usize,
        positions: &CudaSlice<u32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let out_rows = checks::scatter_rows(src.len(), dim, positions.len(), out.len())? as u64;
        if positions.is_empty() || dim == 0 {
            return Ok(());
        }
        let mut bad = self.alloc::<u32>(1)?;
        let (n, d) = (positions.len() as u64, dim_u32("scatter_rows", dim)?);
        let f = self.func("scatter_rows")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(src)
            .arg(&n)
            .arg(positions)
            .arg(&out_rows)
            .arg(&d)
            .arg(out)
            .arg(&mut bad);
        // SAFETY: src is n x dim; the kernel skips (and flags) positions outside `out`.
        unsafe { b.launch(self.warps(n)) }.map_err(|e| cuda_err("scatter_rows", e))?;
        if self.flag_set(&bad)? {
            let host = self.to_host(positions)?;
            let p = host
                .iter()
                .find(|&&p| p as u64 >= out_rows)
                .copied()
                .unwrap_or(u32::MAX);
            return Err(checks::position_outside_output(p, out_rows));
        }
        Ok(())
    }

    fn mean_agg_fwd(
        &self,
        block: &DeviceBlock<Self>,
        layout: AggLayout,
        h_src: &CudaSlice<f32>,
        dim: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        checks::mean_agg_fwd(block, layout, dim, h_src.len(), out.len())?;
        if dim == 0 || block.num_dst == 0 {
            return Ok(());
        }
        let (n_dst, d) = (block.num_dst as u64, dim_u32("mean_agg_fwd", dim)?);
        let stride = dim_u32("mean_agg_fwd", layout.width(dim))?;
        let col = dim_u32("mean_agg_fwd", layout.mean_col(dim))?;
        let f = self.func("sage_mean_forward")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&block.indptr)
            .arg(&block.indices)
            .arg(&n_dst)
            .arg(h_src)
            .arg(&d)
            .arg(out)
            .arg(&stride)
            .arg(&col);
        // SAFETY: the block's arrays come from a validated `Block` (indices < num_src).
        unsafe { b.launch(self.warps(n_dst)) }.map_err(|e| cuda_err("mean_agg_fwd", e))?;
        Ok(())
    }

    fn mean_agg_bwd(
        &self,
        block: &DeviceBlock<Self>,
        layout: AggLayout,
        grad_out: &CudaSlice<f32>,
        dim: usize,
        grad_src: &mut CudaSlice<f32>,
    ) -> Result<()> {
        checks::mean_agg_bwd(block, layout, dim, grad_out.len(), grad_src.len())?;
        if dim == 0 || block.num_src == 0 {
            return Ok(());
        }
        let (n_src, d) = (block.num_src as u64, dim_u32("mean_agg_bwd", dim)?);
        let stride = dim_u32("mean_agg_bwd", layout.width(dim))?;
        let col = dim_u32("mean_agg_bwd", layout.mean_col(dim))?;
        let n_dst = block.num_dst as u64;
        let f = self.func("sage_mean_backward")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&block.indptr)
            .arg(&block.rev_indptr)
            .arg(&block.rev_edges)
            .arg(&block.edge_dst)
            .arg(&n_src)
            .arg(grad_out)
            .arg(&d)
            .arg(grad_src)
            .arg(&stride)
            .arg(&col)
            .arg(&n_dst);
        // SAFETY: the reverse index comes from a validated `Block`.
        unsafe { b.launch(self.warps(n_src)) }.map_err(|e| cuda_err("mean_agg_bwd", e))?;
        Ok(())
    }

    fn part_sampler<'a>(
        &'a self,
        part: &'a GraphPart,
    ) -> Result<Option<Box<dyn PartSampler<Self> + 'a>>> {
        let csr = self.upload_csr(part.first_node(), &part.indptr, &part.indices)?;
        let holds_every_node =
            part.first_node() == 0 && part.num_local_nodes() as u64 == part.meta.num_nodes;
        Ok(Some(Box::new(GpuCsrSource {
            backend: self,
            csr,
            holds_every_node,
        })))
    }

    fn part_walker<'a>(
        &'a self,
        part: &'a GraphPart,
    ) -> Result<Option<Box<dyn TrialScanner + 'a>>> {
        let csr = self.upload_csr(part.first_node(), &part.indptr, &part.indices)?;
        Ok(Some(Box::new(GpuTrials { backend: self, csr })))
    }

    fn sgns_device<'a>(&'a self, dim: usize) -> Result<Option<Box<dyn SgnsDevice + 'a>>> {
        Ok(Some(Box::new(GpuSgns::new(self, dim)?)))
    }
}
