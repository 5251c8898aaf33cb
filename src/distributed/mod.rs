//! Distribution over MPI ranks: the communicator (`comm`, the one seam for MPI: a single-process
//! stand-in when there is no launcher), the launcher check, and the fault handling that keeps a
//! job from hanging (`fault`: panic hook and fatal errors end the whole job with MPI_Abort;
//! SIGTERM / SIGUSR1 request a checkpoint at the next step boundary).

pub mod comm;
pub mod fault;
pub mod graph;

pub use comm::Comm;
