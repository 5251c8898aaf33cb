//! The CUDA backend's `Memory`: device allocation, transfers between host and device, and the
//! page-locked staging area that uploads and host round trips go through. No kernels beyond
//! `fill`; the operations are in `dense` and `graph`.

use cudarc::driver::{CudaSlice, DeviceRepr, PinnedHostSlice, PushKernelArg, ValidAsZeroBits};

use super::{cuda_err, CudaBackend};
use crate::backend::{checks, Memory};
use crate::error::{Error, Result};

/// Largest page-locked staging area a backend keeps (elements, 256 MiB of f32): enough for the
/// gradient buffer and a step's input features; bigger one-off uploads go through pageable memory
/// rather than pinning gigabytes of host memory.
const STAGING_MAX_ELEMS: usize = 64 << 20;

impl CudaBackend {
    pub(super) fn alloc<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>> {
        if len == 0 {
            // cuMemAlloc rejects 0 bytes on some devices: back an empty buffer by one element.
            let one = self
                .stream
                .alloc_zeros::<T>(1)
                .map_err(|e| cuda_err("allocating an empty buffer", e))?;
            let ptr = one.leak();
            // SAFETY: `ptr` was allocated on this stream for one element and is now owned by
            // the returned slice alone, which frees it on drop; length 0 means it is never read.
            return Ok(unsafe { self.stream.upgrade_device_ptr(ptr, 0) });
        }
        self.stream
            .alloc_zeros(len)
            .map_err(|e| cuda_err(&format!("allocating {len} elements"), e))
    }

    /// Copies `len` elements of `src` from `from` to `dst` at `to` on the stream (bounds are the
    /// caller's: `Memory::copy` checks them, the block chain sizes them).
    pub(super) fn copy_within<T: DeviceRepr>(
        &self,
        src: &CudaSlice<T>,
        from: usize,
        dst: &mut CudaSlice<T>,
        to: usize,
        len: usize,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let a = src.slice(from..from + len);
        let mut b = dst.slice_mut(to..to + len);
        self.stream
            .memcpy_dtod(&a, &mut b)
            .map_err(|e| cuda_err("device copy", e))
    }

    pub(super) fn to_device<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        host: &[T],
    ) -> Result<CudaSlice<T>> {
        if host.is_empty() {
            return self.alloc(0);
        }
        self.stream
            .clone_htod(host)
            .map_err(|e| cuda_err(&format!("uploading {} elements", host.len()), e))
    }

    pub(super) fn to_host<T: DeviceRepr + Default + Clone>(
        &self,
        buf: &CudaSlice<T>,
    ) -> Result<Vec<T>> {
        if buf.is_empty() {
            return Ok(Vec::new());
        }
        let v = self
            .stream
            .clone_dtoh(buf)
            .map_err(|e| cuda_err(&format!("downloading {} elements", buf.len()), e))?;
        self.stream
            .synchronize()
            .map_err(|e| cuda_err("synchronising after a download", e))?;
        Ok(v)
    }

    /// Runs `f` with the page-locked staging area, grown to at least `len` elements. The stream
    /// is idle whenever `f` returns (callers synchronise after their copies), so the area can be
    /// reused by the next call.
    pub(super) fn with_staging<R>(
        &self,
        len: usize,
        f: impl FnOnce(&mut PinnedHostSlice<f32>) -> Result<R>,
    ) -> Result<R> {
        let mut guard = self
            .staging
            .lock()
            .map_err(|_| Error::Cuda("staging buffer lock poisoned".into()))?;
        if guard.as_ref().is_none_or(|p| p.len() < len) {
            *guard = None; // free the old area before pinning the new one
                           // Flags 0: ordinary page-locked memory. cudarc's `alloc_pinned` asks for
                           // write-combined memory, which the host (MPI, the feature gather) reads very slowly.
                           // SAFETY: the memory is zero-filled below before anyone reads it.
            let mut pinned = unsafe { self.ctx.alloc_pinned_with_flags::<f32>(len, 0) }
                .map_err(|e| cuda_err(&format!("pinning {len} host elements"), e))?;
            pinned
                .as_mut_slice()
                .map_err(|e| cuda_err("pinned staging", e))?
                .fill(0.0);
            *guard = Some(pinned);
        }
        match guard.as_mut() {
            Some(p) => f(p),
            None => Err(Error::Cuda("staging buffer missing".into())),
        }
    }

    /// Reads back an error flag written by a kernel.
    pub(super) fn flag_set(&self, flag: &CudaSlice<u32>) -> Result<bool> {
        Ok(self.to_host(flag)?.first().is_some_and(|&v| v != 0))
    }
}

impl Memory for CudaBackend {
    type F = CudaSlice<f32>;
    type U = CudaSlice<u32>;

    fn name(&self) -> String {
        self.description.clone()
    }
    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| cuda_err("synchronize", e))
    }

    fn zeros(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.alloc(len)
    }
    fn upload(&self, host: &[f32]) -> Result<CudaSlice<f32>> {
        self.to_device(host)
    }
    fn upload_with(
        &self,
        len: usize,
        fill: &mut dyn FnMut(&mut [f32]) -> Result<()>,
    ) -> Result<CudaSlice<f32>> {
        if len == 0 || len > STAGING_MAX_ELEMS {
            let mut host = vec![0f32; len];
            fill(&mut host)?;
            return self.to_device(&host);
        }
        self.with_staging(len, |pinned| {
            let host = pinned
                .as_mut_slice()
                .map_err(|e| cuda_err("pinned staging", e))?;
            let host = &mut host[..len];
            fill(host)?;
            let mut dst = self.alloc::<f32>(len)?;
            self.stream
                .memcpy_htod(&*host, &mut dst)
                .map_err(|e| cuda_err(&format!("uploading {len} staged elements"), e))?;
            // The staging area is refilled by the next call: wait until the copy has read it.
            self.synchronize()?;
            Ok(dst)
        })
    }
    fn host_round_trip(
        &self,
        buf: &mut CudaSlice<f32>,
        f: &mut dyn FnMut(&mut [f32]) -> Result<()>,
    ) -> Result<()> {
        let len = buf.len();
        if len == 0 {
            return f(&mut []);
        }
        if len > STAGING_MAX_ELEMS {
            let mut host = self.to_host(buf)?;
            f(&mut host)?;
            *buf = self.to_device(&host)?;
            return Ok(());
        }
        self.with_staging(len, |pinned| {
            self.stream
                .memcpy_dtoh(&*buf, pinned)
                .map_err(|e| cuda_err(&format!("downloading {len} elements to staging"), e))?;
            self.synchronize()?;
            let host = pinned
                .as_mut_slice()
                .map_err(|e| cuda_err("pinned staging", e))?;
            let host = &mut host[..len];
            f(host)?;
            self.stream
                .memcpy_htod(&*host, buf)
                .map_err(|e| cuda_err(&format!("uploading {len} staged elements"), e))?;
            self.synchronize()
        })
    }
    fn device_memory(&self) -> Result<Option<(usize, usize)>> {
        let (free, total) = self
            .ctx
            .mem_get_info()
            .map_err(|e| cuda_err("querying device memory", e))?;
        Ok(Some((free, total)))
    }
    fn upload_u32(&self, host: &[u32]) -> Result<CudaSlice<u32>> {
        self.to_device(host)
    }
    fn download(&self, buf: &CudaSlice<f32>) -> Result<Vec<f32>> {
        self.to_host(buf)
    }
    fn len(&self, buf: &CudaSlice<f32>) -> usize {
        buf.len()
    }
    fn len_u32(&self, buf: &CudaSlice<u32>) -> usize {
        buf.len()
    }
    fn copy(
        &self,
        src: (&CudaSlice<f32>, usize),
        dst: (&mut CudaSlice<f32>, usize),
        len: usize,
    ) -> Result<()> {
        checks::copy(src.0.len(), src.1, dst.0.len(), dst.1, len)?;
        self.copy_within(src.0, src.1, dst.0, dst.1, len)
    }
    fn fill(&self, buf: &mut CudaSlice<f32>, value: f32) -> Result<()> {
        let n = buf.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let f = self.func("fill_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(buf).arg(&n).arg(&value);
        // SAFETY: the kernel writes `n` elements of `buf`.
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("fill", e))?;
        Ok(())
    }
}
