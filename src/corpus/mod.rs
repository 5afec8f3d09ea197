//! Text records and the Parquet text shards every data stage reads and writes.

pub mod shard;

pub use shard::{
    list_shards, read_footer, BatchRows, DocId, IdKind, ParquetPart, ShardError, TextRecord, TextShardReader,
    TextShardWriter,
};
