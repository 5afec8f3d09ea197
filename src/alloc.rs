//! glibc malloc settings for tensor work.
//!
//! glibc serves blocks above its mmap threshold with fresh mappings and hands freed memory at the heap's top
//! back to the kernel, so a training step that allocates and frees activation-sized buffers in every op pays
//! page faults and page zeroing again each time (~10% of a 135M-parameter CPU step in `perf`). Keeping blocks
//! up to 32 MiB in the heap and trimming only above 1 GiB of free top measured 91 → 118 tokens/s on that step
//! for +2% peak RSS (benches/RESULTS.md). Values the user set through glibc's own `MALLOC_MMAP_THRESHOLD_` /
//! `MALLOC_TRIM_THRESHOLD_` win.

/// Applies the settings above (glibc on Linux only; elsewhere nothing). Call once, first thing in `main`.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_THRESHOLD: c_int = -3;
        for (param, env, value) in [
            (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", 32 << 20),
            (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", 1 << 30),
        ] {
            if std::env::var_os(env).is_none() {
                // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
                // exists, and a value glibc refuses leaves its default in place (return value 0).
                unsafe {
                    mallopt(param, value);
                }
            }
        }
    }
}
