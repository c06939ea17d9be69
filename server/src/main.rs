use std::ffi::c_long;

use libmimalloc_sys::{mi_option_set_default, mi_option_t};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its place in `mi_option_e` of the
/// mimalloc v3 that libmimalloc-sys builds, which names no constant for it.
const PURGE_DELAY: mi_option_t = 15;

/// How long memory freed to mimalloc stays with the process before it is
/// returned to the OS. Each refresh ends the shards' segments, freeing
/// tantivy's indexing arenas, and the next segments allocate as much again
/// within the second; with mimalloc's 1 s default, steady indexing hands
/// those arenas back and faults them in again, zeroed by the kernel, every
/// refresh (a tenth of the node's CPU while loading).
const PURGE_DELAY_MS: c_long = 10_000;

/// Sets the purge delay, unless the environment chose one
/// (`MIMALLOC_PURGE_DELAY`, read by mimalloc at process start).
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: sets one of mimalloc's option values (a plain store into its
    // option table); `PURGE_DELAY` is within `_mi_option_last`.
    unsafe { mi_option_set_default(PURGE_DELAY, PURGE_DELAY_MS) };
}

/// Turns transparent huge pages off for this process, as databases
/// commonly ask (mimalloc advises them for its arenas). On this kind of
/// machine (`madvise` mode, `defrag` on advised regions) every first touch
/// of a 2 MiB range then waits for the kernel to find, compact and zero a
/// whole huge page: loading through a node took about 5 % more CPU with
/// them. A kernel without the setting keeps them; nothing else changes.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn disable_transparent_huge_pages() {
    // SAFETY: `PR_SET_THP_DISABLE` takes a flag by value and reads or
    // writes no memory of this process.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

fn main() -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    disable_transparent_huge_pages();
    tune_allocator();
    quidditch_server::cli::main()
}

#[cfg(test)]
mod tests {
    use libmimalloc_sys::mi_option_get;

    use super::*;

    /// The purge delay mimalloc uses.
    #[allow(unsafe_code)]
    fn purge_delay() -> c_long {
        // SAFETY: reads one of mimalloc's option values; `PURGE_DELAY` is
        // within `_mi_option_last`.
        unsafe { mi_option_get(PURGE_DELAY) }
    }

    #[test]
    fn purge_delay_is_mimallocs_option() {
        assert!(
            std::env::var_os("MIMALLOC_PURGE_DELAY").is_none(),
            "run without MIMALLOC_PURGE_DELAY"
        );
        // mimalloc's default for `purge_delay`, which no other option of its
        // table has, then the value the node sets.
        assert_eq!(purge_delay(), 1000);
        tune_allocator();
        assert_eq!(purge_delay(), PURGE_DELAY_MS);
    }

    #[cfg(target_os = "linux")]
    #[test]
    #[allow(unsafe_code)]
    fn transparent_huge_pages_are_off() {
        disable_transparent_huge_pages();
        // SAFETY: `PR_GET_THP_DISABLE` returns the flag and touches no memory.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) }, 1);
    }
}
