//! Turning an assignment into parts: the relabelling that gives part `p` the contiguous ids
//! `[offset[p], offset[p+1])` (input order kept within a part), and the remapping of every array
//! of the dataset into one part (`build_part`).

use rayon::prelude::*;

use crate::graph::store::GraphPart;

/// The relabelling: part `p` owns new ids `offset[p]..offset[p+1]`, in input order within a part.
pub struct Relabel {
    pub offset: Vec<u64>,
    /// New id of each old id.
    pub new_id: Vec<u32>,
    /// Old id of each new id.
    pub old_id: Vec<u32>,
}

impl Relabel {
    pub fn new(assign: &[u32], parts: usize) -> Relabel {
        let mut offset = vec![0u64; parts + 1];
        for &p in assign {
            offset[p as usize + 1] += 1;
        }
        for p in 0..parts {
            offset[p + 1] += offset[p];
        }
        let mut next: Vec<u64> = offset[..parts].to_vec();
        let mut new_id = vec![0u32; assign.len()];
        let mut old_id = vec![0u32; assign.len()];
        for (v, &p) in assign.iter().enumerate() {
            let id = next[p as usize];
            next[p as usize] += 1;
            new_id[v] = id as u32;
            old_id[id as usize] = v as u32;
        }
        Relabel {
            offset,
            new_id,
            old_id,
        }
    }
}

/// Positions of the items of each part, grouped by part in input order (a counting sort).
pub(super) struct Grouped {
    start: Vec<usize>,
    index: Vec<usize>,
}

impl Grouped {
    pub(super) fn new(parts: usize, items: usize, part_of: impl Fn(usize) -> usize) -> Grouped {
        let mut start = vec![0usize; parts + 1];
        for i in 0..items {
            start[part_of(i) + 1] += 1;
        }
        for p in 0..parts {
            start[p + 1] += start[p];
        }
        let mut next = start[..parts].to_vec();
        let mut index = vec![0usize; items];
        for i in 0..items {
            let p = part_of(i);
            index[next[p]] = i;
            next[p] += 1;
        }
        Grouped { start, index }
    }
    pub(super) fn of(&self, p: usize) -> &[usize] {
        &self.index[self.start[p]..self.start[p + 1]]
    }
}

/// Builds one part from the dataset: rows, features, node data, edges with owned sources and
/// their negatives, node splits — all in new ids.
pub(super) fn build_part(
    g: &GraphPart,
    relabel: &Relabel,
    p: usize,
    edges: &[Grouped; 3],
    method: &str,
) -> GraphPart {
    let parts = relabel.offset.len() - 1;
    let lo = relabel.offset[p] as usize;
    let hi = relabel.offset[p + 1] as usize;
    let members = &relabel.old_id[lo..hi];
    let f = g.meta.feature_dim as usize;
    let new_id = &relabel.new_id;
    let map = |v: u64| new_id[v as usize] as u64;

    let mut indptr = Vec::with_capacity(members.len() + 1);
    indptr.push(0u64);
    for &v in members {
        let v = v as usize;
        let len = g.indptr[v + 1] - g.indptr[v];
        indptr.push(indptr.last().copied().unwrap_or(0) + len);
    }
    let mut indices = vec![0u32; *indptr.last().unwrap_or(&0) as usize];
    {
        // Each row remapped and sorted, in parallel over rows.
        let mut rows: Vec<&mut [u32]> = Vec::with_capacity(members.len());
        let mut rest = indices.as_mut_slice();
        for w in indptr.windows(2) {
            let (row, tail) = rest.split_at_mut((w[1] - w[0]) as usize);
            rows.push(row);
            rest = tail;
        }
        rows.into_par_iter()
            .zip(members.par_iter())
            .for_each(|(row, &v)| {
                let v = v as usize;
                let src = &g.indices[g.indptr[v] as usize..g.indptr[v + 1] as usize];
                for (d, &u) in row.iter_mut().zip(src) {
                    *d = new_id[u as usize];
                }
                row.sort_unstable();
            });
    }
    let mut features = vec![0f32; members.len() * f];
    if f > 0 {
        features
            .par_chunks_mut(f)
            .zip(members.par_iter())
            .for_each(|(row, &v)| row.copy_from_slice(&g.features[v as usize * f..][..f]));
    }
    let gather = |a: &[i64]| members.iter().map(|&v| a[v as usize]).collect::<Vec<_>>();
    let orig_id = members.iter().map(|&v| g.orig_id[v as usize]).collect();

    let take_edges = |all: &[[u64; 2]], idx: &[usize]| -> Vec<[u64; 2]> {
        idx.iter()
            .map(|&i| [map(all[i][0]), map(all[i][1])])
            .collect()
    };
    let k = g.num_neg;
    let take_negs = |all: &[u64], idx: &[usize]| -> Vec<u64> {
        let mut out = Vec::with_capacity(idx.len() * k);
        for &i in idx {
            out.extend(all[i * k..(i + 1) * k].iter().map(|&v| map(v)));
        }
        out
    };
    let owned = |idx: &[u64]| -> Vec<u64> {
        idx.iter()
            .map(|&v| map(v))
            .filter(|&v| v >= lo as u64 && v < hi as u64)
            .collect()
    };

    let mut meta = g.meta.clone();
    meta.num_parts = parts as u32;
    meta.part_id = p as u32;
    meta.node_offset = relabel.offset.clone();
    meta.partition_method = method.to_string();
    GraphPart {
        meta,
        indptr,
        indices,
        features,
        orig_id,
        time: g.time.as_deref().map(gather),
        label: g.label.as_deref().map(gather),
        train_edges: take_edges(&g.train_edges, edges[0].of(p)),
        valid_edges: take_edges(&g.valid_edges, edges[1].of(p)),
        test_edges: take_edges(&g.test_edges, edges[2].of(p)),
        valid_neg: take_negs(&g.valid_neg, edges[1].of(p)),
        test_neg: take_negs(&g.test_neg, edges[2].of(p)),
        num_neg: k,
        train_idx: owned(&g.train_idx),
        valid_idx: owned(&g.valid_idx),
        test_idx: owned(&g.test_idx),
    }
}
