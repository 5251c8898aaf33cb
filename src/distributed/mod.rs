//! Distribution over MPI ranks: the communicator (`comm`, the one seam for MPI: a single-process
//! stand-in when there is no launcher), the launcher check, and the fault handling that keeps a
//! job from hanging (`fault`: panic hook and fatal errors end the whole job with MPI_Abort;
//! SIGTERM / SIGUSR1 request a checkpoint at the next step boundary; `watchdog`: a rank that
//! waits in a collective past its deadline ends the job, naming the ranks that did not arrive).

pub mod comm;
pub mod fault;
pub mod graph;
pub mod watchdog;

pub use comm::Comm;
