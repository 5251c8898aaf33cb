//! Where a run is between steps (`RunPosition`), and how every rank agrees on where it starts
//! (`agree_on_start`): rank 0 takes the initial parameters or, with `--resume`, the latest good
//! checkpoint that fits the dataset and the model, and broadcasts parameters, optimiser state and
//! position. Any model with a flat parameter buffer and Adam resumes through here.

use crate::distributed::Comm;
use crate::error::{Error, Result};
use crate::nn::adam::AdamState;
use crate::train::checkpoint::{CheckpointDir, ParamEntry};

/// Where a run is; a checkpoint stores it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunPosition {
    pub epoch: u64,
    /// Steps already done in `epoch`.
    pub step: u64,
    pub global_step: u64,
    /// Best validation value so far.
    pub best: Option<f64>,
    pub evals_since_best: u64,
}

/// What a run starts from, identical on every rank.
pub struct StartingPoint {
    pub position: RunPosition,
    pub params: Vec<f32>,
    pub adam: AdamState,
}

/// Rank 0 decides the starting point and broadcasts it (every rank calls this): `initial`
/// parameters with fresh Adam moments, or, when `resume`, the latest good checkpoint in `ckpts`
/// (rank 0's) whose dataset `fingerprint` and parameter `layout` match. A checkpoint that does
/// not fit is an error on every rank, not a silent fresh start.
pub fn agree_on_start(
    comm: &Comm,
    ckpts: Option<&CheckpointDir>,
    resume: bool,
    fingerprint: &str,
    layout: &[ParamEntry],
    initial: Vec<f32>,
) -> Result<StartingPoint> {
    let n = initial.len();
    let mut params = initial;
    let mut m = vec![0f32; n];
    let mut v = vec![0f32; n];
    // epoch, step, global step, adam t, evaluations since the best
    let mut posv = [0u64; 5];
    let mut best_bits = [f64::NAN];
    let mut status = [0u64]; // 1 when rank 0 failed to load a checkpoint
    let mut failure = Vec::new();
    if let (true, Some(dir)) = (resume, ckpts) {
        match dir.latest_good() {
            Ok(Some((path, ck))) => match ck.check_compatible(fingerprint, layout) {
                Ok(()) => {
                    log::info!(
                        "resuming from {} (epoch {}, step {}, global step {})",
                        path.display(),
                        ck.epoch,
                        ck.step,
                        ck.global_step
                    );
                    posv = [
                        ck.epoch,
                        ck.step,
                        ck.global_step,
                        ck.adam_t,
                        ck.config["loop_state"]["evals_since_best"]
                            .as_u64()
                            .unwrap_or(0),
                    ];
                    best_bits = [ck.best_metric.unwrap_or(f64::NAN)];
                    params = ck.params;
                    m = ck.adam_m;
                    v = ck.adam_v;
                }
                Err(e) => {
                    status[0] = 1;
                    failure = e.to_string().into_bytes();
                }
            },
            Ok(None) => log::info!(
                "--resume: no checkpoint in {} yet, starting fresh",
                dir.path().display()
            ),
            Err(e) => {
                status[0] = 1;
                failure = e.to_string().into_bytes();
            }
        }
    }
    comm.broadcast(&mut status, 0);
    comm.broadcast_bytes(&mut failure, 0);
    if status[0] != 0 {
        return Err(Error::Other(format!(
            "cannot resume: {}",
            String::from_utf8_lossy(&failure)
        )));
    }
    comm.broadcast(&mut params, 0);
    comm.broadcast(&mut m, 0);
    comm.broadcast(&mut v, 0);
    comm.broadcast(&mut posv, 0);
    comm.broadcast(&mut best_bits, 0);
    Ok(StartingPoint {
        position: RunPosition {
            epoch: posv[0],
            step: posv[1],
            global_step: posv[2],
            evals_since_best: posv[4],
            best: (!best_bits[0].is_nan()).then_some(best_bits[0]),
        },
        params,
        adam: AdamState { t: posv[3], m, v },
    })
}
