//! The message-passing CSR built from the training edges: each row sorted and distinct, both
//! directions when message passing is undirected, sorted in parallel by whole rows.

use rayon::prelude::*;

/// Entries of the CSR that one parallel task sorts (whole rows, about this many entries).
const CSR_TASK_ENTRIES: u64 = 1 << 20;

/// Message-passing CSR over `n` nodes from `edges` (sorted by `(source, target)`, distinct): row
/// `u` holds the targets of `u`'s edges and, when `both_directions`, the sources of the edges into
/// `u`; each row ascending and without repeats.
pub fn build_csr(n: usize, edges: &[[u32; 2]], both_directions: bool) -> (Vec<u64>, Vec<u32>) {
    let mut indptr = vec![0u64; n + 1];
    for e in edges {
        indptr[e[0] as usize + 1] += 1;
        if both_directions {
            indptr[e[1] as usize + 1] += 1;
        }
    }
    for i in 0..n {
        indptr[i + 1] += indptr[i];
    }
    let mut indices = vec![0u32; indptr[n] as usize];
    let mut cursor: Vec<u64> = indptr[..n].to_vec();
    if both_directions {
        for e in edges {
            let c = &mut cursor[e[1] as usize];
            indices[*c as usize] = e[0];
            *c += 1;
        }
    }
    for e in edges {
        let c = &mut cursor[e[0] as usize];
        indices[*c as usize] = e[1];
        *c += 1;
    }
    drop(cursor);
    if !both_directions {
        // Sorted distinct edges already give ascending rows without repeats.
        return (indptr, indices);
    }
    // Each row is now two ascending runs (sources of in-edges, then targets of out-edges): sort and
    // drop the repeats left by pairs present in both directions, in parallel over row ranges.
    let mut tasks: Vec<(usize, usize, &mut [u32])> = Vec::new();
    let mut rest: &mut [u32] = &mut indices;
    let mut row = 0;
    while row < n {
        let first = row;
        let base = indptr[row];
        row += 1;
        while row < n && indptr[row + 1] - base <= CSR_TASK_ENTRIES {
            row += 1;
        }
        let (chunk, tail) = std::mem::take(&mut rest).split_at_mut((indptr[row] - base) as usize);
        tasks.push((first, row, chunk));
        rest = tail;
    }
    let new_lens: Vec<u64> = tasks
        .into_par_iter()
        .flat_map_iter(|(first, end, chunk)| {
            let base = indptr[first];
            let mut lens = Vec::with_capacity(end - first);
            for r in first..end {
                let row = &mut chunk[(indptr[r] - base) as usize..(indptr[r + 1] - base) as usize];
                row.sort_unstable();
                let mut w = 0;
                for i in 0..row.len() {
                    if i == 0 || row[i] != row[w - 1] {
                        row[w] = row[i];
                        w += 1;
                    }
                }
                lens.push(w as u64);
            }
            lens
        })
        .collect();
    // Compact rows that lost repeats.
    let mut write = 0usize;
    for r in 0..n {
        let start = indptr[r] as usize;
        let len = new_lens[r] as usize;
        indices.copy_within(start..start + len, write);
        indptr[r] = write as u64;
        write += len;
    }
    indptr[n] = write as u64;
    indices.truncate(write);
    indices.shrink_to_fit();
    (indptr, indices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_merges_both_directions_sorted_and_distinct() {
        let edges = vec![[0u32, 1], [0, 2], [1, 0], [2, 3]];
        let (indptr, indices) = build_csr(4, &edges, true);
        assert_eq!(indptr, vec![0, 2, 3, 5, 6]);
        assert_eq!(indices, vec![1, 2, 0, 0, 3, 2]);
        let (indptr, indices) = build_csr(4, &edges, false);
        assert_eq!(indptr, vec![0, 2, 3, 4, 4]);
        assert_eq!(indices, vec![1, 2, 0, 3]);
    }
}
