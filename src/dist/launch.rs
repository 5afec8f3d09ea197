//! `--nproc-per-node N`: this binary starts N copies of itself as the ranks of a one-node job, as
//! `torchrun --nproc-per-node N` does.

use std::ffi::OsString;
use std::net::TcpListener;
use std::process::Command;

use super::DistError;

/// Runs `args` (this process's arguments without the program name) as `n` local ranks: every child gets
/// the same arguments minus `--nproc-per-node`, and RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1 and
/// a free MASTER_PORT. Waits for all of them; fails naming every rank that failed.
pub fn launch_local(n: usize, args: &[OsString]) -> Result<(), DistError> {
    let fail = |msg: String, source: Option<std::io::Error>| DistError::Launch { msg, source };
    if n == 0 {
        return Err(fail("needs at least 1 process".into(), None));
    }
    if std::env::var_os("WORLD_SIZE").is_some() || std::env::var_os("RANK").is_some() {
        return Err(fail(
            "RANK/WORLD_SIZE are already set: a launcher (torchrun, srun, a PyTorchJob) started this process; \
             drop --nproc-per-node and let it start one process per GPU"
                .into(),
            None,
        ));
    }
    let exe = std::env::current_exe().map_err(|e| fail("cannot find this program's path".into(), Some(e)))?;
    // The OS picks a port that is free now; rank 0 binds it a moment later.
    let port = TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| fail("cannot find a free local port".into(), Some(e)))?
        .port();
    let rest = without_flag(args);
    let mut children = Vec::with_capacity(n);
    for rank in 0..n {
        let child = Command::new(&exe)
            .args(&rest)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .spawn()
            .map_err(|e| fail(format!("cannot start rank {rank}"), Some(e)))?;
        children.push(child);
    }
    // A rank that fails makes the others fail too (they lose it), so waiting for all of them ends.
    let mut failed = Vec::new();
    for (rank, mut child) in children.into_iter().enumerate() {
        let status = child.wait().map_err(|e| fail(format!("cannot wait for rank {rank}"), Some(e)))?;
        if !status.success() {
            failed.push(format!("rank {rank} ({status})"));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(fail(format!("{} of {n} ranks failed: {}", failed.len(), failed.join(", ")), None))
    }
}

/// `args` without `--nproc-per-node N` / `--nproc-per-node=N`.
fn without_flag(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut skip = false;
    for a in args {
        if std::mem::take(&mut skip) {
            continue;
        }
        match a.to_str() {
            Some("--nproc-per-node") => skip = true,
            Some(s) if s.starts_with("--nproc-per-node=") => {}
            _ => out.push(a.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::without_flag;

    #[test]
    fn the_flag_and_its_value_are_dropped() {
        let args: Vec<std::ffi::OsString> = ["-q", "train", "--nproc-per-node", "2", "--lr", "1", "--nproc-per-node=3"]
            .iter()
            .map(Into::into)
            .collect();
        let want: Vec<std::ffi::OsString> = ["-q", "train", "--lr", "1"].iter().map(Into::into).collect();
        assert_eq!(without_flag(&args), want);
    }
}
