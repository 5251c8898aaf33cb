//! Small helpers shared by the commands: peak memory, terminal detection, progress bars, a
//! table whose distinct rows threads update in parallel, and the host dot product.
//! (Rank-prefixed logging is `runtime`'s.)

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

/// A row-major table whose rows several threads write at once, each row by at most one thread
/// (scattered sparse updates, where `par_chunks_mut` would visit every row).
pub struct SharedRows<'a> {
    ptr: *mut f32,
    len: usize,
    dim: usize,
    _table: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: access goes through `row_mut`, whose callers promise disjoint rows.
unsafe impl Send for SharedRows<'_> {}
unsafe impl Sync for SharedRows<'_> {}

impl<'a> SharedRows<'a> {
    pub fn new(table: &'a mut [f32], dim: usize) -> Self {
        SharedRows {
            ptr: table.as_mut_ptr(),
            len: table.len(),
            dim,
            _table: std::marker::PhantomData,
        }
    }

    /// Row `i`, mutably.
    ///
    /// # Safety
    /// No other reference to row `i` may be alive (no two threads may hold the same row).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn row_mut(&self, i: usize) -> &mut [f32] {
        assert!((i + 1) * self.dim <= self.len, "row {i} out of the table");
        // SAFETY: in bounds (checked above); exclusive by the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.dim), self.dim) }
    }
}

/// `a · b` in eight partial sums, so the loop vectorises (inlined into callers built for AVX2,
/// it uses their registers) and the order of additions is the same on every machine.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `unix_seconds` as an RFC 3339 UTC timestamp, `2026-12-02T02:30:00Z` (civil date from the
/// day count by the proleptic Gregorian calendar).
pub fn rfc3339_utc(unix_seconds: u64) -> String {
    let (days, rem) = ((unix_seconds / 86_400) as i64, unix_seconds % 86_400);
    // Days since 1970-01-01 -> (year, month, day), counting in 400-year eras from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Now as an RFC 3339 UTC timestamp (see [`rfc3339_utc`]).
pub fn now_rfc3339_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339_utc(secs)
}

/// Asks the cache for the `bytes` from `start` (whole 64-byte lines) ahead of their use, into
/// L2 (`T1`) or L1 (`T0`). A hint: the address is not read, so it need not be in bounds.
#[inline(always)]
pub fn prefetch_lines(start: *const u8, bytes: usize, into_l1: bool) {
    #[cfg(target_arch = "x86_64")]
    for k in (0..bytes.max(1)).step_by(64) {
        let p = start.wrapping_add(k) as *const i8;
        // SAFETY: prefetching never faults and reads nothing into the program.
        unsafe {
            use std::arch::x86_64::*;
            if into_l1 {
                _mm_prefetch(p, _MM_HINT_T0)
            } else {
                _mm_prefetch(p, _MM_HINT_T1)
            }
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, bytes, into_l1);
}

/// Asks the kernel to back the allocation of `buf` (its whole capacity) with 2 MiB pages where
/// transparent huge pages are in their `madvise` mode (Debian's default). Rows read at random
/// from a table larger than the TLB's reach then cost no page walk each; call it before the
/// buffer is first written, so the pages are huge from the first fault. Buffers under 4 MiB and
/// refusals (huge pages off, another OS) are left as they are: this changes speed, never results.
pub fn advise_huge_pages<T>(buf: &Vec<T>) {
    const HUGE: usize = 2 << 20;
    let bytes = buf.capacity() * std::mem::size_of::<T>();
    if bytes < 2 * HUGE {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let start = buf.as_ptr() as usize;
        let first = start.next_multiple_of(HUGE);
        let end = (start + bytes) / HUGE * HUGE;
        if end > first {
            // SAFETY: [first, end) lies inside this vector's own allocation; MADV_HUGEPAGE only
            // changes how the kernel backs the range and never its contents.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
}

/// Size of the largest CPU cache (sysfs `cpu0/cache/index*/size` of the highest level), 0 when
/// unknown.
pub fn last_level_cache_bytes() -> usize {
    let mut best = (0usize, 0usize);
    for i in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
        let (Some(level), Some(size)) = (read("level"), read("size")) else {
            continue;
        };
        let level: usize = level.trim().parse().unwrap_or(0);
        let size = size.trim();
        let bytes = match size.strip_suffix('K') {
            Some(k) => k.parse::<usize>().unwrap_or(0) << 10,
            None => match size.strip_suffix('M') {
                Some(m) => m.parse::<usize>().unwrap_or(0) << 20,
                None => size.parse().unwrap_or(0),
            },
        };
        if level > best.0 || (level == best.0 && bytes > best.1) {
            best = (level, bytes);
        }
    }
    best.1
}

#[cfg(test)]
mod time_tests {
    use super::rfc3339_utc;

    #[test]
    fn timestamps_are_the_civil_utc_date() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339_utc(1_796_177_445), "2026-12-02T02:10:45Z");
        assert_eq!(rfc3339_utc(4_107_542_400), "2100-03-01T00:00:00Z");
    }
}
