//! Logging setup: structured, with request ids from the request spans.
//! Nothing that logs may include a token, a password or a child's name,
//! nor a query string (see `http::middleware::RequestSpan`; tests/it/binary.rs holds it at
//! every level, in both formats).

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; `RUST_LOG` overrides the default filter.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // One line per request when its span closes, with its timing.
        .with_span_events(FmtSpan::CLOSE)
        // Colours for a person at a terminal only: escape codes in a log
        // file garble it for the tools that read it.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
