//! Text records and the Parquet text shards every data stage reads and writes.

pub mod shard;

pub use shard::{
    list_shards, read_footer, BatchRows, DocId, IdKind, ParquetPart, ShardError, TextRecord, TextShardReader,
    TextShardWriter,
};

/// `corpus cat`: the records of a text shard (or a directory of them) as JSON lines, at most `limit`.
pub fn write_jsonl(
    path: &std::path::Path,
    limit: Option<usize>,
    out: &mut impl std::io::Write,
) -> Result<(), ShardError> {
    let stdout = |e: std::io::Error| ShardError::Io { path: "<stdout>".into(), source: e };
    let mut n = 0usize;
    for file in list_shards(path)? {
        for rec in TextShardReader::open(&file)? {
            if limit.is_some_and(|l| n >= l) {
                return out.flush().map_err(stdout);
            }
            let mut line = serde_json::to_vec(&rec?).map_err(|e| stdout(e.into()))?;
            line.push(b'\n');
            out.write_all(&line).map_err(stdout)?;
            n += 1;
        }
    }
    out.flush().map_err(stdout)
}
