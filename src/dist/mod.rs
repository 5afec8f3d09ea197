//! Data parallelism: where a process sits among the ranks of a job (the launchers' environment variables),
//! the `Communicator` the trainer sums gradients with, its TCP implementation (CPU ranks; the rendezvous of
//! every job), NCCL for GPU ranks (feature `nccl`), and `--nproc-per-node`, which starts the local ranks.

mod launch;
#[cfg(feature = "nccl")]
mod nccl;
mod tcp;

pub use launch::launch_local;
#[cfg(feature = "nccl")]
pub use nccl::NcclComm;
pub use tcp::{Rendezvous, TcpComm};

use candle_core::Tensor;

/// torchrun's default rendezvous port, used when `MASTER_PORT` is not set.
pub const DEFAULT_PORT: u16 = 29500;

/// Errors of the rank setup and of collective operations; each names the rank or variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// The launcher's environment variables are missing or inconsistent.
    #[error("{0}")]
    Env(String),
    /// The rendezvous did not complete.
    #[error("rendezvous at {addr}: {msg}")]
    Rendezvous {
        /// MASTER_ADDR:MASTER_PORT.
        addr: String,
        /// What happened and what to do.
        msg: String,
        /// The socket error, if any.
        #[source]
        source: Option<std::io::Error>,
    },
    /// Rank 0 refused this rank (another config, world size or a duplicate rank).
    #[error("rank {rank} refused by rank 0: {msg}")]
    Refused {
        /// This rank.
        rank: usize,
        /// Rank 0's reason.
        msg: String,
    },
    /// Another rank died or stopped answering mid-run.
    #[error("rank {lost} lost ({msg}); every rank stops: resume all ranks from the last checkpoint")]
    Lost {
        /// The rank that is gone.
        lost: usize,
        /// How it was noticed.
        msg: String,
        /// The socket error, if any.
        #[source]
        source: Option<std::io::Error>,
    },
    /// Moving a tensor to or from the host, or NCCL itself, failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Starting or waiting for local rank processes failed.
    #[error("--nproc-per-node: {msg}")]
    Launch {
        /// What failed.
        msg: String,
        /// The process error, if any.
        #[source]
        source: Option<std::io::Error>,
    },
}

/// The collective operations data parallelism needs. Every rank calls them in the same order.
pub trait Communicator {
    /// This process's rank, 0..world_size.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// The element-wise sum of `t` (a flat f32 tensor) over all ranks; every rank gets the same values.
    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<Tensor, DistError>;
    /// Returns once every rank has called it.
    fn barrier(&mut self) -> Result<(), DistError>;
    /// Rank `root`'s `bytes` on every rank.
    fn broadcast(&mut self, bytes: &mut Vec<u8>, root: usize) -> Result<(), DistError>;
}

/// Where this process sits in a job, as the launcher said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankEnv {
    /// Global rank.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Rank on this node (picks the GPU); 0 when not given (one process per pod or node).
    pub local_rank: usize,
    /// Host of rank 0.
    pub master_addr: String,
    /// Rendezvous port on rank 0's host.
    pub master_port: u16,
}

impl RankEnv {
    /// From `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT` (torchrun, Kubernetes
    /// PyTorchJob), else `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`; `None` when neither names a rank
    /// (a single process).
    pub fn from_env() -> Result<Option<Self>, DistError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// As [`RankEnv::from_env`], with the variables from `get`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, DistError> {
        let num = |key: &str| -> Result<Option<usize>, DistError> {
            get(key)
                .map(|v| v.trim().parse::<usize>().map_err(|_| DistError::Env(format!("{key}={v:?} is not a number"))))
                .transpose()
        };
        let (rank, world, local, names) = match (num("RANK")?, num("WORLD_SIZE")?) {
            (Some(r), Some(w)) => (r, w, num("LOCAL_RANK")?, ["RANK", "WORLD_SIZE"]),
            (None, None) => match (num("SLURM_PROCID")?, num("SLURM_NTASKS")?) {
                (Some(r), Some(w)) => (r, w, num("SLURM_LOCALID")?, ["SLURM_PROCID", "SLURM_NTASKS"]),
                _ => return Ok(None),
            },
            _ => return Err(DistError::Env("set both RANK and WORLD_SIZE, or neither".into())),
        };
        if world == 0 || rank >= world {
            return Err(DistError::Env(format!("{}={rank} must be below {}={world}", names[0], names[1])));
        }
        let master_port = match get("MASTER_PORT") {
            Some(p) => p.trim().parse().map_err(|_| DistError::Env(format!("MASTER_PORT={p:?} is not a port")))?,
            None => DEFAULT_PORT,
        };
        let master_addr = match get("MASTER_ADDR") {
            Some(a) if !a.trim().is_empty() => a.trim().to_string(),
            _ if world == 1 => "127.0.0.1".into(),
            _ => {
                return Err(DistError::Env(format!(
                    "{}={world} but MASTER_ADDR is not set: set it to rank 0's host (on Slurm: \
                     MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n1))",
                    names[1]
                )))
            }
        };
        Ok(Some(RankEnv { rank, world_size: world, local_rank: local.unwrap_or(0), master_addr, master_port }))
    }

    /// Joins the rendezvous at MASTER_ADDR:MASTER_PORT (rank 0 listens, the others connect) and exchanges
    /// `config_hash`: a rank whose hash differs from rank 0's is refused.
    pub fn connect(&self, config_hash: &str) -> Result<TcpComm, DistError> {
        if self.rank == 0 {
            Rendezvous::bind(&self.master_addr, self.master_port)?.accept(self.world_size, config_hash)
        } else {
            TcpComm::connect(&self.master_addr, self.master_port, self.rank, self.world_size, config_hash)
        }
    }
}

/// Seconds a collective operation waits for another rank before calling it lost: `LANGADAPT_DIST_TIMEOUT`,
/// default 1,800 (rank 0 writes checkpoints and validates while the others wait).
pub fn timeout() -> std::time::Duration {
    let s = std::env::var("LANGADAPT_DIST_TIMEOUT").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(1800);
    std::time::Duration::from_secs(s.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn rank_env_from_torchrun_and_slurm_variables() {
        assert_eq!(RankEnv::from_vars(vars(&[])).unwrap(), None);
        let torchrun = [("RANK", "3"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "n0")];
        let want = RankEnv { rank: 3, world_size: 8, local_rank: 1, master_addr: "n0".into(), master_port: 29500 };
        assert_eq!(RankEnv::from_vars(vars(&torchrun)).unwrap(), Some(want));
        let slurm = [("SLURM_PROCID", "5"), ("SLURM_NTASKS", "6"), ("SLURM_LOCALID", "1"), ("MASTER_ADDR", "n1")];
        let got = RankEnv::from_vars(vars(&slurm)).unwrap().unwrap();
        assert_eq!((got.rank, got.world_size, got.local_rank, got.master_addr.as_str()), (5, 6, 1, "n1"));
        let pod = RankEnv::from_vars(vars(&[("RANK", "5"), ("WORLD_SIZE", "8"), ("MASTER_ADDR", "m")])).unwrap();
        assert_eq!(pod.unwrap().local_rank, 0, "one GPU per pod: no LOCAL_RANK, GPU 0");
        let err = RankEnv::from_vars(vars(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")])).unwrap_err();
        assert!(err.to_string().contains("MASTER_ADDR is not set"), "{err}");
        let err = RankEnv::from_vars(vars(&[("RANK", "2"), ("WORLD_SIZE", "2")])).unwrap_err();
        assert_eq!(err.to_string(), "RANK=2 must be below WORLD_SIZE=2");
        let err = RankEnv::from_vars(vars(&[("RANK", "0")])).unwrap_err();
        assert_eq!(err.to_string(), "set both RANK and WORLD_SIZE, or neither");
    }
}
