//! The README's first command, `langadapt run examples/quickstart.toml`, on the bundled data.

use crate::common::{langadapt, stderr};

#[test]
fn quickstart_runs_and_a_second_run_keeps_the_outputs() {
    let out = tempfile::tempdir().unwrap();
    let recipe = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.toml");
    let o = out.path().to_str().unwrap();
    let plan = langadapt(&["run", recipe, "--out", o, "--dry-run"]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert_eq!(String::from_utf8_lossy(&plan.stdout), format!("wiki\t{o}/wiki\n"));
    assert!(!out.path().join("wiki").exists(), "--dry-run must not write");

    let r = langadapt(&["run", recipe, "--out", o]);
    assert!(r.status.success(), "{}", stderr(&r));
    let part = out.path().join("wiki/part-00000.parquet");
    let first = std::fs::read(&part).unwrap();
    let r = langadapt(&["run", recipe, "--out", o]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(std::fs::read(&part).unwrap(), first);
    let m = langadapt::manifest::Manifest::read(&out.path().join("wiki/manifest.json")).unwrap();
    assert_eq!((m.counts["articles"], m.counts["resumed_parts"]), (26, 1));
}
