//! The library's error type: every failure names what it was about (file, line, field, rank).
//!
//! The binary turns these into `anyhow` errors at its edge; nothing in the library panics on bad
//! input.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in the library, with the context a user needs to fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed at the OS level.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A text input had a bad line.
    #[error("{path}:{line}: {msg}")]
    Parse {
        path: PathBuf,
        line: u64,
        msg: String,
    },
    /// An input was readable but its content is wrong (shape, value, field).
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    /// An HDF5 file could not be opened, or a dataset or attribute is missing or malformed.
    #[error("{path}: HDF5: {msg}")]
    Hdf5 { path: PathBuf, msg: String },
    /// Writing a file failed; the file at `path` was left as it was (writes go to a temporary
    /// sibling that replaces it only when complete).
    #[error("cannot write {path} (nothing at that path changed): {cause}")]
    Write { path: PathBuf, cause: Box<Error> },
    /// A configuration value or command-line flag is out of range.
    #[error("config: {field}: {msg}")]
    Config { field: String, msg: String },
    /// Something an MPI rank found that stops the whole job.
    #[error("rank {rank}: {msg}")]
    Rank { rank: usize, msg: String },
    /// Training diverged or hit another numeric failure.
    #[error("numeric: {0}")]
    Numeric(String),
    /// The CUDA backend could not do what was asked.
    #[error("cuda: {0}")]
    Cuda(String),
    /// A stop signal (SIGTERM / SIGUSR1), agreed by all ranks, interrupted a collective phase
    /// (evaluation, loading); callers that can save their state catch it.
    #[error("stopped by signal during {0}")]
    Stopped(String),
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Other(String),
}

/// Result type of the library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
    pub fn parse(path: impl AsRef<Path>, line: u64, msg: impl Into<String>) -> Self {
        Error::Parse {
            path: path.as_ref().to_path_buf(),
            line,
            msg: msg.into(),
        }
    }
    pub fn invalid(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Invalid {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }
    pub fn hdf5(path: impl AsRef<Path>, msg: impl std::fmt::Display) -> Self {
        Error::Hdf5 {
            path: path.as_ref().to_path_buf(),
            msg: msg.to_string(),
        }
    }
    pub fn config(field: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            msg: msg.into(),
        }
    }
}
