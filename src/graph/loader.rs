//! Loading one rank's share of a part set: with `P` parts on `W` ranks (`P % W == 0`), rank `r`
//! reads parts `r*P/W .. (r+1)*P/W`, checks each against the manifest and concatenates them into
//! one `GraphPart` whose meta is at rank granularity (`num_parts = W`, `part_id = r`, offsets of
//! the ranks), so `store::owner_of` names the owning rank.
//!
//! Nothing here talks to other ranks; every rank calls it on its own files.

use std::path::Path;

use crate::error::{Error, Result};
use crate::graph::manifest::{file_digest, part_file_name, Manifest};
use crate::graph::store::{GraphPart, PartSelection, FORMAT_VERSION};

/// Reads and checks `dir/manifest.json`.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    Manifest::read(dir)
}

/// Which parts rank `rank` of `world` loads.
pub fn rank_part_range(
    num_parts: usize,
    rank: usize,
    world: usize,
) -> Result<std::ops::Range<usize>> {
    if world == 0 || rank >= world {
        return Err(Error::config(
            "world",
            format!("rank {rank} is outside a world of {world} ranks"),
        ));
    }
    if !num_parts.is_multiple_of(world) {
        return Err(Error::config(
            "world",
            format!(
                "{num_parts} parts cannot be split evenly over {world} ranks; use a W that divides {num_parts}"
            ),
        ));
    }
    let per = num_parts / world;
    Ok(rank * per..(rank + 1) * per)
}

/// Loads the parts of `rank` (of `world` ranks) from the part directory `dir` as one graph.
pub fn load_rank_parts(dir: &Path, rank: usize, world: usize) -> Result<GraphPart> {
    load_rank_parts_selected(dir, rank, world, PartSelection::ALL)
}

/// [`load_rank_parts`] reading only the arrays `sel` names (the others stay empty).
pub fn load_rank_parts_selected(
    dir: &Path,
    rank: usize,
    world: usize,
    sel: PartSelection,
) -> Result<GraphPart> {
    let manifest = read_manifest(dir)?;
    let p_count = manifest.num_parts as usize;
    let range = rank_part_range(p_count, rank, world)?;
    let per = p_count / world;

    let mut merged: Option<GraphPart> = None;
    for p in range.clone() {
        let path = dir.join(part_file_name(p));
        if !path.exists() {
            return Err(Error::invalid(
                &path,
                format!(
                    "part file missing: the manifest lists {p_count} parts and rank {rank} of {world} needs parts {}..{}",
                    range.start, range.end
                ),
            ));
        }
        let meta = GraphPart::read_meta(&path)?;
        check_part_meta(&path, &meta, &manifest, p)?;
        let part = GraphPart::read_selected(&path, sel)?;
        merged = Some(match merged {
            None => part,
            Some(mut acc) => {
                append_part(&mut acc, part);
                acc
            }
        });
    }
    let mut g = merged.ok_or_else(|| Error::Other("no parts to load".into()))?;
    g.meta.num_parts = world as u32;
    g.meta.part_id = rank as u32;
    g.meta.node_offset = (0..=world).map(|r| manifest.node_offset[r * per]).collect();
    g.validate_selected(dir, sel)?;
    Ok(g)
}

/// A part must come from the manifest's dataset, format and part set, in its slot.
fn check_part_meta(
    path: &Path,
    meta: &crate::graph::store::GraphMeta,
    manifest: &Manifest,
    p: usize,
) -> Result<()> {
    if meta.format_version != manifest.format_version || meta.format_version != FORMAT_VERSION {
        return Err(Error::invalid(
            path,
            format!(
                "format_version {} does not match the manifest's {} (this build reads {FORMAT_VERSION})",
                meta.format_version, manifest.format_version
            ),
        ));
    }
    if meta.fingerprint != manifest.fingerprint {
        return Err(Error::invalid(
            path,
            format!(
                "belongs to another dataset: fingerprint {} ({}) but the manifest is for {} ({})",
                meta.fingerprint, meta.dataset_name, manifest.fingerprint, manifest.dataset_name
            ),
        ));
    }
    if meta.num_parts != manifest.num_parts
        || meta.part_id as usize != p
        || meta.node_offset != manifest.node_offset
    {
        return Err(Error::invalid(
            path,
            format!(
                "is part {} of {} with other offsets, but the manifest expects part {p} of {}",
                meta.part_id, meta.num_parts, manifest.num_parts
            ),
        ));
    }
    Ok(())
}

/// Appends `next` (the part owning the ids right after `acc`'s) to `acc`; the caller sets the
/// merged meta.
fn append_part(acc: &mut GraphPart, next: GraphPart) {
    let base = acc.indices.len() as u64;
    acc.indptr
        .extend(next.indptr[1..].iter().map(|&x| x + base));
    acc.indices.extend_from_slice(&next.indices);
    acc.features.extend_from_slice(&next.features);
    acc.orig_id.extend_from_slice(&next.orig_id);
    if let (Some(a), Some(b)) = (acc.time.as_mut(), next.time.as_ref()) {
        a.extend_from_slice(b);
    }
    if let (Some(a), Some(b)) = (acc.label.as_mut(), next.label.as_ref()) {
        a.extend_from_slice(b);
    }
    acc.train_edges.extend_from_slice(&next.train_edges);
    acc.valid_edges.extend_from_slice(&next.valid_edges);
    acc.test_edges.extend_from_slice(&next.test_edges);
    acc.valid_neg.extend_from_slice(&next.valid_neg);
    acc.test_neg.extend_from_slice(&next.test_neg);
    acc.train_idx.extend_from_slice(&next.train_idx);
    acc.valid_idx.extend_from_slice(&next.valid_idx);
    acc.test_idx.extend_from_slice(&next.test_idx);
}

/// Recomputes the SHA-256 of every file the manifest lists: `(name, matches)`; a missing or
/// unreadable file does not match.
pub fn verify_checksums(dir: &Path) -> Result<Vec<(String, bool)>> {
    let manifest = read_manifest(dir)?;
    Ok(manifest
        .files
        .iter()
        .map(|f| {
            let ok = match file_digest(&dir.join(&f.name)) {
                Ok((bytes, sha)) => bytes == f.bytes && sha == f.sha256,
                Err(_) => false,
            };
            (f.name.clone(), ok)
        })
        .collect())
}
