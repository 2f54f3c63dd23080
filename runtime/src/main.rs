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

/// The commands that only read files and print: piped into `head`, they end quietly when the
/// reader goes, like other Unix tools. Rust ignores SIGPIPE, so `println!` to a closed pipe
/// panicked instead (`weir check ... | head -c 10`: a backtrace and exit 101; third probe,
/// B5). The commands that talk to the network keep ignoring it (a peer that closes a socket
/// must not kill them), and so does `check` of an `oci://` reference (a pull).
const PRINTING_COMMANDS: [&str; 4] = ["check", "cost", "key", "new"];

#[allow(unsafe_code)]
fn default_sigpipe_when_only_printing() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let printing = args
        .first()
        .is_some_and(|c| PRINTING_COMMANDS.iter().any(|p| c == *p));
    let pulls = args.iter().any(|a| a.to_string_lossy().contains("oci://"));
    if printing && !pulls {
        // SAFETY: `signal` sets the disposition of SIGPIPE to its default; it runs first thing
        // in `main`, before any other thread, and installs no handler.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    default_sigpipe_when_only_printing();
    weir::cli::run()
}
