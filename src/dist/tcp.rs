//! The TCP rendezvous and a star all-reduce over it: every rank talks to rank 0 only. Rank 0 adds the
//! ranks' buffers in rank order and sends the sum back, so every rank gets the same bits and a run is
//! reproducible for a given world size. Meant for CPU ranks and for setting up NCCL; its bandwidth is
//! one link's, so GPU ranks use NCCL for the gradients.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};

use super::{timeout, Communicator, DistError};

/// The first bytes of a hello: protocol name and version.
const MAGIC: &[u8; 8] = b"LADIST01";

const HELLO: u8 = 1;
const OK: u8 = 2;
const REFUSE: u8 = 3;
const DATA: u8 = 4;
const ABORT: u8 = 5;

fn send(s: &mut TcpStream, tag: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut head = [0u8; 9];
    head[0] = tag;
    head[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    s.write_all(&head)?;
    s.write_all(payload)?;
    s.flush()
}

fn recv(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head)?;
    let len = u64::from_le_bytes(head[1..].try_into().expect("8 bytes")) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)?;
    Ok((head[0], payload))
}

/// How a socket error reads in a lost-rank message.
fn why(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => "connection closed".into(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            format!("no answer within {} s (LANGADAPT_DIST_TIMEOUT)", timeout().as_secs())
        }
        _ => "socket error".into(),
    }
}

fn lost(rank: usize, e: std::io::Error) -> DistError {
    DistError::Lost { lost: rank, msg: why(&e), source: Some(e) }
}

/// Rank 0's listening socket, before the other ranks have joined.
pub struct Rendezvous {
    listener: TcpListener,
    addr: String,
}

impl Rendezvous {
    /// Listens on every interface at `port` (0 = any free port, see [`Rendezvous::port`]); `host` is only
    /// named in errors.
    pub fn bind(host: &str, port: u16) -> Result<Self, DistError> {
        let addr = format!("{host}:{port}");
        let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| DistError::Rendezvous {
            addr: addr.clone(),
            msg: "rank 0 cannot listen on MASTER_PORT (in use? pick another)".into(),
            source: Some(e),
        })?;
        Ok(Rendezvous { listener, addr })
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// Waits for ranks 1..world_size; refuses (and stops the job on) a rank with another world size,
    /// a rank number already taken, or a config hash unlike `config_hash`.
    pub fn accept(self, world_size: usize, config_hash: &str) -> Result<TcpComm, DistError> {
        let fail = |msg: String, source: Option<std::io::Error>| DistError::Rendezvous {
            addr: self.addr.clone(),
            msg,
            source,
        };
        let deadline = Instant::now() + timeout();
        let mut peers: Vec<Option<TcpStream>> = (1..world_size).map(|_| None).collect();
        self.listener.set_nonblocking(true).map_err(|e| fail("cannot poll the socket".into(), Some(e)))?;
        while peers.iter().any(Option::is_none) {
            let mut s = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        let missing: Vec<String> =
                            (1..world_size).filter(|r| peers[r - 1].is_none()).map(|r| r.to_string()).collect();
                        return Err(fail(
                            format!(
                                "rank(s) {} did not join within {} s (LANGADAPT_DIST_TIMEOUT); were they started \
                                 with the same MASTER_ADDR and MASTER_PORT?",
                                missing.join(", "),
                                timeout().as_secs()
                            ),
                            None,
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(e) => return Err(fail("accept failed".into(), Some(e))),
            };
            let setup = s
                .set_nonblocking(false)
                .and_then(|()| s.set_read_timeout(Some(Duration::from_secs(30))))
                .and_then(|()| s.set_nodelay(true));
            let hello = setup.and_then(|()| recv(&mut s));
            // A stray connection (a port scanner, a health check) is not a rank: drop it and wait on.
            let Ok((HELLO, payload)) = hello else { continue };
            if payload.len() < 16 || &payload[..8] != MAGIC {
                continue;
            }
            let rank = u32::from_le_bytes(payload[8..12].try_into().expect("4 bytes")) as usize;
            let world = u32::from_le_bytes(payload[12..16].try_into().expect("4 bytes")) as usize;
            let theirs = String::from_utf8_lossy(&payload[16..]).into_owned();
            let refusal = if world != world_size {
                Some(format!("it was started with world size {world}, rank 0 with {world_size}"))
            } else if rank == 0 || rank >= world_size {
                Some(format!("rank {rank} is not in 1..{world_size}"))
            } else if peers[rank - 1].is_some() {
                Some(format!("rank {rank} has already joined (two processes with the same RANK?)"))
            } else if theirs != config_hash {
                Some(format!(
                    "its config hash {theirs} differs from rank 0's {config_hash}: every rank must run the same \
                     train.toml, flags, model and shards"
                ))
            } else {
                None
            };
            if let Some(msg) = refusal {
                let _ = send(&mut s, REFUSE, msg.as_bytes());
                for p in peers.iter_mut().flatten() {
                    let _ = send(p, ABORT, &abort_payload(rank, &format!("refused at the rendezvous: {msg}")));
                }
                return Err(fail(format!("rank {rank} refused: {msg}"), None));
            }
            peers[rank - 1] = Some(s);
        }
        let mut streams = Vec::with_capacity(world_size - 1);
        for (i, p) in peers.into_iter().enumerate() {
            let mut s = p.expect("all joined");
            s.set_read_timeout(Some(timeout())).map_err(|e| lost(i + 1, e))?;
            send(&mut s, OK, &[]).map_err(|e| lost(i + 1, e))?;
            streams.push(s);
        }
        Ok(TcpComm { rank: 0, world_size, peers: streams })
    }
}

fn abort_payload(lost: usize, msg: &str) -> Vec<u8> {
    let mut p = (lost as u32).to_le_bytes().to_vec();
    p.extend_from_slice(msg.as_bytes());
    p
}

/// A rank's connections: rank 0 holds one to every other rank, the others one to rank 0.
pub struct TcpComm {
    rank: usize,
    world_size: usize,
    /// Rank 0: ranks 1.. in order; other ranks: rank 0.
    peers: Vec<TcpStream>,
}

impl TcpComm {
    /// Joins rank 0's rendezvous at `host:port` as `rank`, retrying until rank 0 listens.
    pub fn connect(
        host: &str,
        port: u16,
        rank: usize,
        world_size: usize,
        config_hash: &str,
    ) -> Result<Self, DistError> {
        let addr = format!("{host}:{port}");
        let fail =
            |msg: String, source: Option<std::io::Error>| DistError::Rendezvous { addr: addr.clone(), msg, source };
        let deadline = Instant::now() + timeout();
        let mut s = loop {
            match TcpStream::connect((host, port)) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(fail(
                        format!(
                            "rank 0 did not answer within {} s (LANGADAPT_DIST_TIMEOUT); is it running, and are \
                             MASTER_ADDR and MASTER_PORT its host and port?",
                            timeout().as_secs()
                        ),
                        Some(e),
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&(rank as u32).to_le_bytes());
        hello.extend_from_slice(&(world_size as u32).to_le_bytes());
        hello.extend_from_slice(config_hash.as_bytes());
        s.set_nodelay(true)
            .and_then(|()| s.set_read_timeout(Some(timeout())))
            .and_then(|()| send(&mut s, HELLO, &hello))
            .map_err(|e| fail("cannot greet rank 0".into(), Some(e)))?;
        match recv(&mut s) {
            Ok((OK, _)) => Ok(TcpComm { rank, world_size, peers: vec![s] }),
            Ok((REFUSE, msg)) => Err(DistError::Refused { rank, msg: String::from_utf8_lossy(&msg).into_owned() }),
            Ok((ABORT, p)) => Err(aborted(&p)),
            Ok((tag, _)) => Err(fail(format!("rank 0 answered with message type {tag}, expected OK"), None)),
            Err(e) => Err(fail("rank 0 closed the connection before the job started".into(), Some(e))),
        }
    }

    /// Every rank sends `mine` to rank 0, which `combine`s them (in rank order) and sends the result back.
    fn exchange(
        &mut self,
        mine: Vec<u8>,
        combine: impl FnOnce(Vec<Vec<u8>>) -> Result<Vec<u8>, DistError>,
    ) -> Result<Vec<u8>, DistError> {
        if self.rank != 0 {
            let s = &mut self.peers[0];
            if let Err(e) = send(s, DATA, &mine) {
                // Rank 0 may have stopped the job first: its ABORT, already here, names the rank that was lost.
                return Err(match recv(s) {
                    Ok((ABORT, p)) => aborted(&p),
                    _ => lost(0, e),
                });
            }
            return match recv(s).map_err(|e| lost(0, e))? {
                (DATA, out) => Ok(out),
                (ABORT, p) => Err(aborted(&p)),
                (tag, _) => Err(DistError::Lost {
                    lost: 0,
                    msg: format!("rank 0 sent message type {tag} (out of step)"),
                    source: None,
                }),
            };
        }
        let mut parts = vec![mine];
        for r in 1..self.world_size {
            let got = match recv(&mut self.peers[r - 1]) {
                Ok((DATA, p)) => Ok(p),
                Ok((tag, _)) => Err(DistError::Lost {
                    lost: r,
                    msg: format!("rank {r} sent message type {tag} (out of step)"),
                    source: None,
                }),
                Err(e) => Err(lost(r, e)),
            };
            match got {
                Ok(p) => parts.push(p),
                Err(e) => return Err(self.abort(e)),
            }
        }
        let out = match combine(parts) {
            Ok(out) => out,
            Err(e) => return Err(self.abort(e)),
        };
        for r in 1..self.world_size {
            if let Err(e) = send(&mut self.peers[r - 1], DATA, &out) {
                return Err(self.abort(lost(r, e)));
            }
        }
        Ok(out)
    }

    /// Rank 0 tells the other ranks why the job stops, then returns `e`.
    fn abort(&mut self, e: DistError) -> DistError {
        let (who, msg) = match &e {
            DistError::Lost { lost, msg, .. } => (*lost, msg.clone()),
            other => (0, format!("{other}")),
        };
        for p in &mut self.peers {
            let _ = send(p, ABORT, &abort_payload(who, &msg));
            // Read what the rank still sends until it hangs up (briefly): closing a socket with unread data
            // resets it, and a reset can discard the ABORT before the rank reads it.
            let _ = p.shutdown(std::net::Shutdown::Write);
            let _ = p.set_read_timeout(Some(Duration::from_secs(2)));
            let mut sink = [0u8; 4096];
            while matches!(p.read(&mut sink), Ok(n) if n > 0) {}
        }
        e
    }
}

/// The error a rank reports when rank 0 stops the job.
fn aborted(payload: &[u8]) -> DistError {
    let lost = payload.get(..4).map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes"))) as usize;
    let msg = String::from_utf8_lossy(payload.get(4..).unwrap_or_default());
    DistError::Lost { lost, msg: format!("{msg}; reported by rank 0"), source: None }
}

impl Communicator for TcpComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<Tensor, DistError> {
        let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let n = values.len();
        let out = self.exchange(bytes, |parts| {
            let mut sum = vec![0f32; n];
            for (r, p) in parts.iter().enumerate() {
                if p.len() != 4 * n {
                    return Err(DistError::Lost {
                        lost: r,
                        msg: format!("rank {r} sent {} values, rank 0 has {n} (ranks out of step)", p.len() / 4),
                        source: None,
                    });
                }
                for (s, b) in sum.iter_mut().zip(p.chunks_exact(4)) {
                    *s += f32::from_le_bytes(b.try_into().expect("4 bytes"));
                }
            }
            Ok(sum.iter().flat_map(|v| v.to_le_bytes()).collect())
        })?;
        let sum: Vec<f32> = out.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
        Ok(Tensor::from_vec(sum, t.shape(), t.device())?.to_dtype(t.dtype())?)
    }

    fn barrier(&mut self) -> Result<(), DistError> {
        self.exchange(Vec::new(), |_| Ok(Vec::new())).map(|_| ())
    }

    fn broadcast(&mut self, bytes: &mut Vec<u8>, root: usize) -> Result<(), DistError> {
        let mine = if self.rank == root { std::mem::take(bytes) } else { Vec::new() };
        *bytes = self.exchange(mine, |mut parts| Ok(std::mem::take(&mut parts[root])))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `world` ranks on 127.0.0.1, each running `f` in its own thread; rank 0's port is picked by the OS.
    fn ranks<T: Send + 'static>(
        world: usize,
        hashes: Vec<&'static str>,
        f: impl Fn(Result<TcpComm, DistError>) -> T + Send + Sync + Copy + 'static,
    ) -> Vec<T> {
        let rv = Rendezvous::bind("127.0.0.1", 0).unwrap();
        let port = rv.port();
        let root_hash = hashes[0];
        let mut handles = vec![std::thread::spawn(move || f(rv.accept(world, root_hash)))];
        for (r, h) in hashes.into_iter().enumerate().skip(1) {
            handles.push(std::thread::spawn(move || f(TcpComm::connect("127.0.0.1", port, r, world, h))));
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn all_reduce_broadcast_and_barrier_over_three_ranks() {
        let out = ranks(3, vec!["h", "h", "h"], |c| {
            let mut c = c.unwrap();
            let r = c.rank() as f32;
            let t = Tensor::new(&[1.0f32 + r, 10.0 * r, -0.5], &Device::Cpu).unwrap();
            let sum = c.all_reduce_sum(&t).unwrap().to_vec1::<f32>().unwrap();
            let mut b = if c.rank() == 2 { b"from two".to_vec() } else { b"x".to_vec() };
            c.broadcast(&mut b, 2).unwrap();
            c.barrier().unwrap();
            (sum, b)
        });
        for (sum, b) in out {
            assert_eq!(sum, [6.0, 30.0, -1.5]);
            assert_eq!(b, b"from two");
        }
    }

    #[test]
    fn another_config_hash_is_refused_and_stops_rank_zero() {
        let out = ranks(2, vec!["aaa", "bbb"], |c| c.err().map(|e| e.to_string()));
        let zero = out[0].as_ref().unwrap();
        assert!(zero.contains("rank 1 refused: its config hash bbb differs from rank 0's aaa: every rank"), "{zero}");
        let one = out[1].as_ref().unwrap();
        assert!(one.starts_with("rank 1 refused by rank 0: its config hash bbb differs"), "{one}");
    }

    #[test]
    fn a_rank_that_dies_is_named_on_every_other_rank() {
        let out = ranks(3, vec!["h", "h", "h"], |c| {
            let mut c = c.unwrap();
            let t = Tensor::new(&[1f32], &Device::Cpu).unwrap();
            c.all_reduce_sum(&t).unwrap();
            if c.rank() == 1 {
                return None; // dropping the connection is what a killed process does to its sockets
            }
            Some(c.all_reduce_sum(&t).unwrap_err().to_string())
        });
        for e in [&out[0], &out[2]] {
            let e = e.as_ref().unwrap();
            assert!(e.starts_with("rank 1 lost (connection closed"), "{e}");
        }
    }
}
