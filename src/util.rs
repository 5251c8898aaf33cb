//! Small process-level helpers shared by the commands: logging set-up with the rank prefix,
//! peak memory, terminal detection.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

static LOG_RANK: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Sets the rank shown at the start of every log line (`[r0] ...`).
pub fn set_log_rank(rank: usize) {
    LOG_RANK.store(rank, Ordering::Relaxed);
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

/// Peak resident set size of this process in bytes (Linux `VmHWM`), 0 when unknown.
pub fn peak_rss_bytes() -> u64 {
    proc_status_kib("VmHWM:") * 1024
}

/// Current resident set size of this process in bytes (Linux `VmRSS`), 0 when unknown.
pub fn rss_bytes() -> u64 {
    proc_status_kib("VmRSS:") * 1024
}

fn proc_status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Whether standard error is a terminal (progress bars only then).
pub fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// A progress bar on a terminal, hidden otherwise (logs carry the progress then).
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    if !stderr_is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(
        "{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}
