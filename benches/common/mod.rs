//! Helpers shared by the benchmarks.

use std::path::Path;

/// Replaces bench `name`'s section of RESULTS.md (between its markers), keeping anything else in the file.
pub fn update_results(path: &Path, name: &str, section: &str) {
    let begin = format!("<!-- {name}: begin (written by `cargo bench --bench {name}`) -->");
    let end = format!("<!-- {name}: end -->");
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{begin}\n{section}{end}\n");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{block}{}", &old[..b], &old[e + end.len()..].trim_start_matches('\n'))
        }
        _ if old.is_empty() => format!("# Benchmark results\n\nHow to run and what is compared: benches/README.md.\n\n{block}"),
        _ => format!("{}\n{block}", old.trim_end()),
    };
    std::fs::write(path, new).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
