//! The `callback-sim` binary: everything, the command line included, is in the library
//! ([`callback_sim::cli`]).

/// glibc's malloc serialises on arena locks under many threads; mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    callback_sim::cli::main()
}
