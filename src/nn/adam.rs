//! Adam over the flat parameter buffer, with serialisable state (`m`, `v`, step count `t`).

use serde::{Deserialize, Serialize};

use crate::backend::{AdamCoeffs, Backend};
use crate::error::{Error, Result};

/// Adam's hyper-parameters (PyTorch defaults; `weight_decay` is coupled L2 as in `torch.optim.Adam`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    pub lr: f32,
    /// Moment decays, in f64: the bias corrections `1 - beta^t` are computed in f64 from them,
    /// and the kernels get them rounded to f32.
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, m: String| Err(Error::config(f, m));
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", format!("{} must be positive", self.lr));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad(
                "adam betas",
                format!("({}, {}) must be in [0, 1)", self.beta1, self.beta2),
            );
        }
        if self.eps.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
            || self.weight_decay < 0.0
        {
            return bad(
                "adam eps / weight_decay",
                "eps must be > 0, weight_decay >= 0".into(),
            );
        }
        Ok(())
    }

    /// The scalars of step `t` (1-based), bias corrections in f64.
    pub fn coeffs(&self, t: u64) -> AdamCoeffs {
        let t = t as i32;
        AdamCoeffs {
            lr: self.lr,
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            eps: self.eps,
            weight_decay: self.weight_decay,
            bias1: (1.0 - self.beta1.powi(t)) as f32,
            bias2: (1.0 - self.beta2.powi(t)) as f32,
        }
    }
}

/// The optimiser state on the host, for checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamState {
    /// Steps taken so far.
    pub t: u64,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

/// Adam with its moments on the backend.
pub struct Adam<B: Backend> {
    pub config: AdamConfig,
    pub m: B::F,
    pub v: B::F,
    /// Steps taken so far (the next step uses `t + 1`).
    pub t: u64,
}

impl<B: Backend> Adam<B> {
    /// Fresh state for `len` parameters.
    pub fn new(b: &B, config: AdamConfig, len: usize) -> Result<Self> {
        config.validate()?;
        Ok(Adam {
            config,
            m: b.zeros(len)?,
            v: b.zeros(len)?,
            t: 0,
        })
    }

    /// Restores a checkpointed state.
    pub fn from_state(b: &B, config: AdamConfig, state: &AdamState) -> Result<Self> {
        config.validate()?;
        if state.m.len() != state.v.len() {
            return Err(Error::Other(format!(
                "adam state: m has {} values, v {}",
                state.m.len(),
                state.v.len()
            )));
        }
        Ok(Adam {
            config,
            m: b.upload(&state.m)?,
            v: b.upload(&state.v)?,
            t: state.t,
        })
    }

    pub fn state(&self, b: &B) -> Result<AdamState> {
        Ok(AdamState {
            t: self.t,
            m: b.download(&self.m)?,
            v: b.download(&self.v)?,
        })
    }

    /// One update of `params` with `grads` (same layout); increments `t`.
    pub fn step(&mut self, b: &B, params: &mut B::F, grads: &B::F) -> Result<()> {
        let c = self.config.coeffs(self.t + 1);
        b.adam_update(params, grads, &mut self.m, &mut self.v, &c)?;
        self.t += 1;
        Ok(())
    }
}
