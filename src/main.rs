//! The `annals` binary: the annals command line around the reference
//! credit domain (examples/credit).

/// mimalloc rather than the system allocator: a server answers each
/// request with many short-lived allocations of mixed sizes (request and
/// TLS record buffers, JSON, events), on which glibc's allocator spent
/// about a sixth of the process's CPU time (merging free chunks back
/// together, mostly).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    annals_credit::app().run()
}
