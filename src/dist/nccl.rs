//! NCCL for GPU ranks (feature `nccl`): rank 0 makes the unique id and sends it over the TCP rendezvous;
//! gradients are summed by NCCL on the GPUs, barriers and broadcasts (small, rare) stay on TCP.

use std::rc::Rc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use cudarc::nccl::safe::{Comm, Id, ReduceOp};

use super::{Communicator, DistError, TcpComm};

/// A GPU rank: NCCL for all-reduce, the rendezvous connection for the rest.
pub struct NcclComm {
    tcp: TcpComm,
    comm: Rc<Comm>,
}

fn nccl_error(what: &str, e: cudarc::nccl::result::NcclError) -> DistError {
    DistError::Candle(candle_core::Error::Msg(format!("NCCL {what}: {e:?}")))
}

impl NcclComm {
    /// Sets up NCCL on `device` (this rank's GPU) with the ranks of `tcp`.
    pub fn new(mut tcp: TcpComm, device: &Device) -> Result<Self, DistError> {
        let Device::Cuda(dev) = device else {
            return Err(DistError::Env(format!("NCCL needs a CUDA device, this rank has {device:?}")));
        };
        let mut id = if tcp.rank() == 0 {
            let id = Id::new().map_err(|e| nccl_error("unique id", e))?;
            id.internal().iter().map(|&c| c as u8).collect()
        } else {
            Vec::new()
        };
        tcp.broadcast(&mut id, 0)?;
        let mut internal = [0 as std::ffi::c_char; 128];
        if id.len() != internal.len() {
            return Err(DistError::Env(format!("the NCCL id from rank 0 has {} bytes, expected 128", id.len())));
        }
        for (d, s) in internal.iter_mut().zip(&id) {
            *d = *s as std::ffi::c_char;
        }
        let comm = Comm::from_rank(dev.cuda_stream(), tcp.rank(), tcp.world_size(), Id::uninit(internal))
            .map_err(|e| nccl_error("init", e))?;
        Ok(NcclComm { tcp, comm: Rc::new(comm) })
    }
}

/// The all-reduce as a candle op, so it runs on the tensor's own storage and stream.
struct AllReduce {
    comm: Rc<Comm>,
}

// SAFETY: the op is created, applied and dropped on the rank's one training thread; candle requires the
// bounds of every custom op, it never moves this one across threads.
unsafe impl Send for AllReduce {}
// SAFETY: as above.
unsafe impl Sync for AllReduce {}

impl CustomOp1 for AllReduce {
    fn name(&self) -> &'static str {
        "nccl-all-reduce"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the NCCL all-reduce needs CUDA tensors")
    }

    fn cuda_fwd(&self, s: &CudaStorage, layout: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let n = layout.shape().elem_count();
        let dev = s.device().clone();
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("the NCCL all-reduce needs a contiguous tensor")
        };
        let src = s.as_cuda_slice::<f32>()?.slice(start..end);
        let mut dst = dev.alloc_zeros::<f32>(n)?;
        self.comm.all_reduce(&src, &mut dst, &ReduceOp::Sum).map_err(candle_core::Error::debug)?;
        Ok((CudaStorage::wrap_cuda_slice(dst, dev), layout.shape().clone()))
    }
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.tcp.rank()
    }

    fn world_size(&self) -> usize {
        self.tcp.world_size()
    }

    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<Tensor, DistError> {
        let flat = t.to_dtype(DType::F32)?.flatten_all()?.contiguous()?;
        let sum = flat.apply_op1_no_bwd(&AllReduce { comm: self.comm.clone() })?;
        Ok(sum.reshape(t.shape())?.to_dtype(t.dtype())?)
    }

    fn barrier(&mut self) -> Result<(), DistError> {
        self.tcp.barrier()
    }

    fn broadcast(&mut self, bytes: &mut Vec<u8>, root: usize) -> Result<(), DistError> {
        self.tcp.broadcast(bytes, root)
    }
}
