use std::process::ExitCode;

use clap::Parser;

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
