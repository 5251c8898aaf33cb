//! `shardsage inspect PATH`: the summary of whatever PATH is — a directory of parts, a dataset or
//! part file (`graph::inspect`), or a training checkpoint (`train::checkpoint`).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::graph::inspect::{summarize_graph_file, summarize_part_dir};
use crate::graph::manifest::MANIFEST_NAME;
use crate::train::checkpoint;

/// The summary of whatever `path` is: a part directory, a graph file or a checkpoint.
pub fn summarize(path: &Path) -> Result<String> {
    if path.is_dir() {
        if !path.join(MANIFEST_NAME).exists() {
            return Err(Error::invalid(
                path,
                format!("directory has no {MANIFEST_NAME}: not a part directory"),
            ));
        }
        return summarize_part_dir(path);
    }
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ));
    }
    match summarize_graph_file(path) {
        Ok(s) => Ok(s),
        Err(graph_err) if !checkpoint::is_checkpoint(path) => Err(Error::Other(format!(
            "{}: not a graph file ({graph_err}) nor a checkpoint",
            path.display()
        ))),
        Err(graph_err) => checkpoint::summary(path).map_err(|ckpt_err| {
            Error::Other(format!(
                "{}: neither a graph file ({graph_err}) nor a checkpoint ({ckpt_err})",
                path.display()
            ))
        }),
    }
}

/// `shardsage inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// A dataset or part file, a directory of parts, or a checkpoint.
    pub path: PathBuf,
}

pub fn run(args: &InspectArgs) -> Result<()> {
    print!("{}", summarize(&args.path)?);
    Ok(())
}
