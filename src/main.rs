//! The `tidemark` binary: everything lives in the library; this only maps the result to an exit code.
//!
//! The binary allocates through jemalloc. Measured on the 10,000-model plan benchmark (2-core
//! VM, `docs/performance.md`), glibc's malloc spends a third of a no-op plan in the kernel:
//! its per-thread arenas grow a page at a time (25,000 `mprotect` calls) and every page is
//! faulted in separately. jemalloc takes ~15 % off that plan and leaves the backfills as they
//! were (time within noise, peak memory within a few percent). mimalloc was faster still on
//! plans but held twice the memory on backfills, or spent a quarter more time returning it.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(tidemark::main().code())
}
