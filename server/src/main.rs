use std::process::ExitCode;

use clap::Parser;

// glibc's malloc was a quarter of a report's CPU (#19 item 4) and contends
// when one thread frees what another made; mimalloc does neither.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = casesync::cli::Cli::parse();
    if !matches!(cli.command, casesync::cli::Command::Serve) {
        // A listing piped into `head` should end quietly, as other command
        // line tools do, not panic on the closed pipe. The server keeps
        // Rust's default (ignored SIGPIPE) so a vanished client cannot kill it.
        // SAFETY: called before any thread starts; restores the OS default.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match casesync::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("casesync: {err}");
            ExitCode::FAILURE
        }
    }
}
