//! The checks `build_dataset` makes before it writes anything: options, node arrays, features
//! (shape and finiteness), a given split; and taking given held-out edges (and their reverses
//! under undirected message passing) out of the training edges. Errors name the dataset and
//! the field.

use rayon::prelude::*;

use super::{BuildOptions, GivenSplit, RawGraph};
use crate::error::{Error, Result};

/// An error about one field of the raw graph or the options.
pub(super) fn field_error(name: &str, field: &str, msg: impl Into<String>) -> Error {
    Error::invalid(format!("dataset {name:?}, field `{field}`"), msg)
}

/// Sort key of an edge: lexicographic `(source, target)`.
#[inline]
pub(super) fn key(e: [u32; 2]) -> u64 {
    ((e[0] as u64) << 32) | e[1] as u64
}

/// The node count of a raw graph (see `RawGraph`).
pub(super) fn node_count(raw: &RawGraph) -> u64 {
    if !raw.orig_id.is_empty() {
        return raw.orig_id.len() as u64;
    }
    if let (Some(f), true) = (&raw.features, raw.feature_dim > 0) {
        return (f.len() / raw.feature_dim) as u64;
    }
    if let Some(t) = &raw.time {
        return t.len() as u64;
    }
    if let Some(l) = &raw.label {
        return l.len() as u64;
    }
    raw.edges
        .par_iter()
        .map(|e| e[0].max(e[1]) as u64 + 1)
        .max()
        .unwrap_or(0)
}

pub(super) fn check_options(name: &str, opts: &BuildOptions, need_synthetic: bool) -> Result<()> {
    let frac_ok = |x: f64| x.is_finite() && (0.0..1.0).contains(&x);
    if !frac_ok(opts.valid_fraction)
        || !frac_ok(opts.test_fraction)
        || opts.valid_fraction + opts.test_fraction >= 1.0
    {
        return Err(field_error(
            name,
            "valid_fraction/test_fraction",
            format!(
                "{} and {} must each be in [0, 1) and sum to less than 1",
                opts.valid_fraction, opts.test_fraction
            ),
        ));
    }
    let sum: f64 = opts.node_split.iter().sum();
    if opts.node_split.iter().any(|&x| !x.is_finite() || x < 0.0) || sum > 1.0 + 1e-9 {
        return Err(field_error(
            name,
            "node_split",
            format!(
                "{:?} must be non-negative and sum to at most 1",
                opts.node_split
            ),
        ));
    }
    if need_synthetic && opts.synthetic_dim == 0 {
        return Err(field_error(
            name,
            "synthetic_dim",
            "synthetic features need a width of at least 1",
        ));
    }
    Ok(())
}

pub(super) fn check_features(name: &str, f: &[f32], dim: usize, n: u64) -> Result<()> {
    if dim == 0 {
        return Err(field_error(
            name,
            "feature_dim",
            "features are given but feature_dim is 0",
        ));
    }
    if !f.len().is_multiple_of(dim) || (f.len() / dim) as u64 != n {
        return Err(field_error(
            name,
            "features",
            format!(
                "{} values are {} rows of width {dim}, but the graph has {n} nodes",
                f.len(),
                f.len() as f64 / dim as f64
            ),
        ));
    }
    if let Some(p) = f.par_iter().position_first(|v| !v.is_finite()) {
        return Err(field_error(
            name,
            "features",
            format!(
                "row {} column {} is {} (features must be finite)",
                p / dim,
                p % dim,
                f[p]
            ),
        ));
    }
    Ok(())
}

pub(super) fn check_given_split(name: &str, g: &GivenSplit, n: u64) -> Result<()> {
    for (field, edges, negs) in [
        ("valid", &g.valid, &g.valid_neg),
        ("test", &g.test, &g.test_neg),
    ] {
        if let Some(e) = edges.iter().find(|e| e[0] as u64 >= n || e[1] as u64 >= n) {
            return Err(field_error(
                name,
                &format!("given_split.{field}"),
                format!(
                    "edge ({}, {}) names a node >= the node count {n}",
                    e[0], e[1]
                ),
            ));
        }
        if negs.len() != edges.len() * g.num_neg {
            return Err(field_error(
                name,
                &format!("given_split.{field}_neg"),
                format!(
                    "{} negatives for {} edges x {} per edge",
                    negs.len(),
                    edges.len(),
                    g.num_neg
                ),
            ));
        }
        if let Some(&v) = negs.iter().find(|&&v| v as u64 >= n) {
            return Err(field_error(
                name,
                &format!("given_split.{field}_neg"),
                format!("negative {v} is >= the node count {n}"),
            ));
        }
    }
    Ok(())
}

/// Removes held-out pairs from the (sorted) training edges: the held-out edge itself when it was
/// given and is also an input edge, and, with undirected message passing, its reverse (which would
/// otherwise put the held-out pair into the CSR). Returns `(same, reverse)` counts removed.
pub(super) fn remove_heldout_from_train(
    train: &mut Vec<[u32; 2]>,
    valid: &[[u32; 2]],
    test: &[[u32; 2]],
    directed: bool,
    undirected_mp: bool,
) -> (u64, u64) {
    let canon = |e: [u32; 2]| {
        if directed {
            e
        } else {
            [e[0].min(e[1]), e[0].max(e[1])]
        }
    };
    let find =
        |train: &[[u32; 2]], e: [u32; 2]| train.binary_search_by_key(&key(e), |&x| key(x)).ok();
    let mut same = Vec::new();
    let mut reverse = Vec::new();
    for &e in valid.iter().chain(test) {
        if let Some(i) = find(train, canon(e)) {
            same.push(i);
        }
        if undirected_mp && directed {
            if let Some(i) = find(train, [e[1], e[0]]) {
                reverse.push(i);
            }
        }
    }
    same.sort_unstable();
    same.dedup();
    reverse.sort_unstable();
    reverse.dedup();
    // An edge whose pair is held out in both directions counts once, as the same edge.
    reverse.retain(|i| same.binary_search(i).is_err());
    let (n_same, n_rev) = (same.len() as u64, reverse.len() as u64);
    if n_same + n_rev > 0 {
        let mut drop = same;
        drop.extend(reverse);
        drop.sort_unstable();
        let mut next = 0;
        let mut i = 0;
        train.retain(|_| {
            let remove = next < drop.len() && drop[next] == i;
            if remove {
                next += 1;
            }
            i += 1;
            !remove
        });
    }
    (n_same, n_rev)
}
