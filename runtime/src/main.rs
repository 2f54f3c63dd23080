//! The `weir` binary: parse the command line and hand over to the library.

/// mimalloc instead of glibc's malloc. The request path allocates and frees many small buffers
/// on tokio's worker threads, where glibc's malloc and free took about a tenth of the process's
/// CPU; with mimalloc the 3-stage route serves about a third more requests per second
/// (`bench/ab.sh`). Built not to ask for transparent huge pages (`no_thp`: no
/// `MADV_HUGEPAGE` on its arenas): when it asked, idle RSS grew from 24 MB to 37 MB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (15 in both mimalloc 2's and 3's `mi_option_e`).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed pages go back to the kernel 10 ms after they empty (mimalloc 2's default; 3 waits a
/// second, and a process that went idle right after a burst, such as compiling its stages at
/// start, kept about 20 MB more). `MIMALLOC_PURGE_DELAY` in the environment still wins.
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` stores a number in mimalloc's option table, and 15 is a
        // valid option. It runs first thing in `main`, before weir starts any other thread,
        // so no allocator call reads the table while it is written.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 10) };
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    weir::cli::run()
}
