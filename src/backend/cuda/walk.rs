//! The random-walk step's trial scan on the GPU (`kernels/walk.cu`, one thread per walker) over
//! a part's CSR on the device: `GpuTrials`, the `walk::TrialScanner` that `GraphOps::part_walker`
//! hands out. Its scans are identical to `walk::HostTrials`'s, so walks are the same on CPU and
//! GPU; the exchanges between ranks stay on the host.

use cudarc::driver::PushKernelArg;

use super::sampler::DeviceCsr;
use super::{cuda_err, CudaBackend};
use crate::error::Result;
use crate::walk::{check_scan, TrialScan, TrialScanner, WalkConfig, Walker, ASKS_PER_ROUND};

/// Trial scans of walkers on a part owned by `csr`.
pub struct GpuTrials<'a> {
    pub backend: &'a CudaBackend,
    pub csr: DeviceCsr,
}

/// `status` values of `walk_trials`.
const OPEN: u32 = 0;
const MOVES: u32 = 1;
const ENDS: u32 = 2;

impl TrialScanner for GpuTrials<'_> {
    fn scan(&self, cfg: &WalkConfig, walkers: &[Walker], scans: &mut [TrialScan]) -> Result<()> {
        let (first, local) = (self.csr.first_node, self.csr.num_nodes as u64);
        check_scan(walkers, scans, first, local)?;
        let b = self.backend;
        if walkers.is_empty() {
            return Ok(());
        }
        let n = walkers.len() as u64;
        let walk: Vec<u64> = walkers.iter().map(|w| w.walk).collect();
        let cur: Vec<u32> = walkers.iter().map(|w| w.cur).collect();
        let prev: Vec<u32> = walkers.iter().map(|w| w.prev).collect();
        let step: Vec<u32> = walkers.iter().map(|w| w.step).collect();
        let status: Vec<u32> = scans
            .iter()
            .map(|s| match s.decided {
                None => OPEN,
                Some(Some(_)) => MOVES,
                Some(None) => ENDS,
            })
            .collect();
        let next: Vec<u64> = scans.iter().map(|s| s.next_trial).collect();
        let (d_walk, d_cur) = (b.to_device(&walk)?, b.to_device(&cur)?);
        let (d_prev, d_step) = (b.to_device(&prev)?, b.to_device(&step)?);
        let mut d_status = b.to_device(&status)?;
        let mut d_next = b.to_device(&next)?;
        let mut d_node = b.alloc::<u32>(walkers.len())?;
        let mut d_asked_len = b.alloc::<u32>(walkers.len())?;
        let mut d_asked_x = b.alloc::<u32>(walkers.len() * ASKS_PER_ROUND)?;
        let mut d_asked_u = b.alloc::<f64>(walkers.len() * ASKS_PER_ROUND)?;
        let bound = cfg.bound();
        let first_order = cfg.first_order() as u32;
        let f = b.func("walk_trials")?;
        let mut l = b.stream.launch_builder(f);
        l.arg(&self.csr.indptr)
            .arg(&self.csr.indices)
            .arg(&first)
            .arg(&local)
            .arg(&d_walk)
            .arg(&d_cur)
            .arg(&d_prev)
            .arg(&d_step)
            .arg(&n)
            .arg(&cfg.seed)
            .arg(&cfg.p)
            .arg(&cfg.q)
            .arg(&bound)
            .arg(&first_order)
            .arg(&mut d_status)
            .arg(&mut d_next)
            .arg(&mut d_node)
            .arg(&mut d_asked_len)
            .arg(&mut d_asked_x)
            .arg(&mut d_asked_u);
        // SAFETY: every walker's node is inside the CSR (checked above); the per-walker outputs
        // hold n (and n * ASKS_PER_ROUND) elements.
        unsafe { l.launch(b.threads(n)) }.map_err(|e| cuda_err("walk_trials", e))?;
        let status = b.to_host(&d_status)?;
        let next = b.to_host(&d_next)?;
        let node = b.to_host(&d_node)?;
        let asked_len = b.to_host(&d_asked_len)?;
        let asked_x = b.to_host(&d_asked_x)?;
        let asked_u = b.to_host(&d_asked_u)?;
        for (i, s) in scans.iter_mut().enumerate() {
            if s.decided.is_some() {
                continue;
            }
            s.next_trial = next[i];
            s.asked_len = asked_len[i] as usize;
            for j in 0..s.asked_len {
                let k = i * ASKS_PER_ROUND + j;
                s.asked[j] = (asked_x[k], asked_u[k]);
            }
            let x = (node[i] != crate::walk::NO_NODE).then_some(node[i]);
            s.local_accept = None;
            match status[i] {
                MOVES => s.decided = Some(x),
                ENDS => s.decided = Some(None),
                _ => s.local_accept = x,
            }
        }
        Ok(())
    }
}
