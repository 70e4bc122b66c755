use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = casesync::cli::Cli::parse();
    match casesync::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("casesync: {err}");
            ExitCode::FAILURE
        }
    }
}
