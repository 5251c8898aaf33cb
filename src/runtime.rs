//! What every command needs before its own work: the communicator with rank-prefixed logging and
//! the abort-on-error contract (`with_rank`), the thread pool, the choice of backend
//! (`DeviceKind`, `with_backend`), and loading this rank's parts. Training, evaluation and any
//! later model or server start the same way; none of their own logic lives here.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::backend::{Backend, CpuGemm};
use crate::distributed::fault::install_abort_on_panic;
use crate::distributed::Comm;
use crate::error::Result;
use serde::{Deserialize, Serialize};

static LOG_RANK: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Sets the rank shown at the start of every log line (`[r0] ...`).
pub fn set_log_rank(rank: usize) {
    LOG_RANK.store(rank, Ordering::Relaxed);
}

/// Keeps the memory of freed mid-sized buffers in the process for the next batch. glibc returns
/// every block above its mmap threshold (128 KiB at first, rising with what is freed) to the
/// kernel on free, so each batch's fresh index arrays (a few MiB each) fault in zeroed pages
/// again: the kernel's page zeroing was a fifth of a sampler-bench profile on the
/// ogbl-citation2-sized graph. Blocks up to 32 MiB (glibc's own ceiling for that threshold)
/// come from the heap, trimmed past 64 MiB free at its top; larger ones (features and
/// activations, which the backend's buffer pool reuses anyway) are still mapped and returned.
/// Measured on a 2-core AMD EPYC: the sampler bench at 1 thread 13.2M against 10.0M sampled
/// edges/s without, and the same peak memory in bench-train's memory scenario (W = 2: 1710 /
/// 1516 MiB per rank, 1703 / 1516 without; a 256 MiB threshold had given 2000 / 1680). Call
/// once, before threads start.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// Initialises `env_logger` (level from `RUST_LOG`, default `info`), each line prefixed with the
/// rank once `set_log_rank` has been called.
pub fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    let _ = env_logger::Builder::from_env(env)
        .format(|buf, record| {
            let rank = LOG_RANK.load(Ordering::Relaxed);
            let ts = buf.timestamp_seconds();
            if rank == usize::MAX {
                writeln!(buf, "{ts} {:5} {}", record.level(), record.args())
            } else {
                writeln!(buf, "{ts} {:5} [r{rank}] {}", record.level(), record.args())
            }
        })
        .try_init();
}

/// Where the hot operations run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// CUDA when a driver and a device are present, else the CPU (with a log line saying why).
    #[default]
    Auto,
    /// The CPU backend (rayon threads).
    Cpu,
    /// A CUDA GPU, chosen by the rank's node-local rank; an error when there is none.
    Cuda,
}

/// How a command computes, the same flags for every command that does (train, eval, embed,
/// predict): threads and device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct ExecutionArgs {
    /// CPU threads per rank (0 = the cores of this machine divided among its ranks).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Where the hot operations run.
    #[arg(long, value_enum, default_value_t = DeviceKind::Auto)]
    pub device: DeviceKind,
    /// The library behind the CPU backend's matrix products (`make bench-gemm` compares them
    /// on the model's shapes); OpenBLAS and BLIS are loaded at run time; auto: OpenBLAS on CPUs
    /// with AVX-512 when it loads, else the gemm crate.
    #[arg(long, value_enum, env = "SHARDSAGE_CPU_GEMM", default_value_t = CpuGemm::Auto)]
    pub cpu_gemm: CpuGemm,
    /// Seconds a rank may wait in one collective (for the others to arrive) before the job
    /// ends naming the ranks that did not; inside training steps a tighter deadline is derived
    /// from the first steps' times (10x the slowest, at least 30 s). 0 = wait forever.
    #[arg(long, env = "SHARDSAGE_WATCHDOG_SECONDS", default_value_t = crate::distributed::watchdog::DEFAULT_DEADLINE_S)]
    pub watchdog_seconds: u64,
}

impl ExecutionArgs {
    /// The watchdog's deadline (`None` when off).
    pub fn watchdog(&self) -> Option<std::time::Duration> {
        (self.watchdog_seconds > 0).then(|| std::time::Duration::from_secs(self.watchdog_seconds))
    }
}

impl Default for ExecutionArgs {
    fn default() -> Self {
        declared_defaults()
    }
}

/// The value of a flags struct when no flag is given: the defaults declared on its fields (what
/// `--help` shows), so a `Default` impl never restates them.
pub fn declared_defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults"));
    match cmd
        .try_get_matches_from(["defaults"])
        .and_then(|m| T::from_arg_matches(&m))
    {
        Ok(v) => v,
        Err(e) => unreachable!("declared defaults do not parse: {e}"),
    }
}

/// Ranks of this job on this machine (for dividing the cores), from the launcher's variables.
pub fn local_ranks() -> usize {
    for var in [
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "MPI_LOCALNRANKS",
        "SLURM_NTASKS_PER_NODE",
    ] {
        if let Some(n) = std::env::var(var)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            if n > 0 {
                return n;
            }
        }
    }
    1
}

/// Applies the execution settings that hold for the whole command: the size of rayon's pool
/// for this rank (returned) and the watchdog's deadline.
pub fn init_execution(comm: &Comm, exec: &ExecutionArgs) -> usize {
    comm.set_watchdog(exec.watchdog());
    init_threads(exec.threads)
}

/// Whether this node's ranks have more threads than it has cores (`threads` per rank), so
/// that every extra thread a rank starts takes a core from another rank.
pub fn cores_oversubscribed(threads: usize) -> bool {
    local_ranks() * threads.max(1) > node_cores()
}

/// The cores this process may run on.
fn node_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Sets the size of rayon's pool for this rank.
fn init_threads(threads: usize) -> usize {
    let n = if threads > 0 {
        threads
    } else {
        (node_cores() / local_ranks()).max(1)
    };
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    rayon::current_num_threads()
}

/// Sets up MPI and fault handling, runs `body`, and turns an error on any rank into the end of
/// the whole job (MPI_Abort) instead of a hang.
pub fn with_rank<T>(body: impl FnOnce(&Comm) -> Result<T>) -> Result<T> {
    let comm = Comm::init()?;
    set_log_rank(comm.rank());
    install_abort_on_panic(comm.rank(), comm.size());
    match body(&comm) {
        Ok(v) => Ok(v),
        Err(e) if comm.size() > 1 => comm.abort(1, &e.to_string()),
        Err(e) => Err(e),
    }
}

/// Runs `job` with the backend the config asks for; a GPU is picked by the rank's node-local
/// rank.
pub fn with_backend<T>(
    exec: &ExecutionArgs,
    threads: usize,
    local_rank: usize,
    job: impl BackendJob<Output = T>,
) -> Result<T> {
    use crate::backend::cuda::CudaBackend;
    // The global pool when it has the asked size (the commands size it first), so that one set
    // of workers serves the step and the batch preparation.
    let cpu = || -> Result<crate::backend::CpuBackend> {
        let backend = if threads == rayon::current_num_threads() {
            crate::backend::CpuBackend::on_global_pool()
        } else {
            crate::backend::CpuBackend::new(threads)?
        };
        backend.with_gemm(exec.cpu_gemm)
    };
    match exec.device {
        DeviceKind::Cpu => {
            let backend = cpu()?;
            log::info!(
                "device: CPU backend with {threads} threads, products by {} (--device cpu)",
                backend.gemm_name()
            );
            job.run(backend)
        }
        DeviceKind::Auto => match CudaBackend::for_local_rank(local_rank) {
            Ok(b) => job.run(b),
            Err(why) => {
                let backend = cpu()?;
                log::info!(
                    "device: CPU backend with {threads} threads, products by {}, no GPU used ({why})",
                    backend.gemm_name()
                );
                job.run(backend)
            }
        },
        DeviceKind::Cuda => job.run(CudaBackend::for_local_rank(local_rank)?),
    }
}

/// A piece of work generic over the backend.
pub trait BackendJob {
    type Output;
    fn run<B: Backend>(self, backend: B) -> Result<Self::Output>;
}

/// Loads this rank's parts and reports its memory.
pub fn load_rank_graph(
    comm: &Comm,
    data: &std::path::Path,
) -> Result<crate::graph::store::GraphPart> {
    load_rank_graph_selected(comm, data, crate::graph::store::PartSelection::ALL)
}

/// [`load_rank_graph`] reading only the arrays `sel` names.
pub fn load_rank_graph_selected(
    comm: &Comm,
    data: &std::path::Path,
    sel: crate::graph::store::PartSelection,
) -> Result<crate::graph::store::GraphPart> {
    let t = std::time::Instant::now();
    let part = crate::graph::loader::load_rank_parts_selected(data, comm.rank(), comm.size(), sel)?;
    log::info!(
        "loaded {} nodes [{}, {}), {} training edges, {} CSR entries in {:.1}s; RSS {:.1} MiB",
        part.num_local_nodes(),
        part.first_node(),
        part.first_node() + part.num_local_nodes() as u64,
        part.train_edges.len(),
        part.indices.len(),
        t.elapsed().as_secs_f64(),
        crate::util::rss_bytes() as f64 / (1 << 20) as f64
    );
    Ok(part)
}
