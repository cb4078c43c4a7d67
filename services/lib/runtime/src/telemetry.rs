//! Logging: tracing to stderr, plain text for people or JSON lines for collectors.

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// Environment variable holding an `EnvFilter` directive (`info,ragw_registrar=debug`); it wins
/// over the configured level so an operator can turn up one module without editing the file.
pub const LOG_ENV: &str = "RAGW_LOG";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

/// Installs the global subscriber. A second call (tests, or `ragw dev` starting components that
/// each initialise logging) leaves the first subscriber in place.
pub fn init_tracing(format: LogFormat, default_level: &str) {
    let (filter, rejected) = match std::env::var(LOG_ENV) {
        Ok(directives) if !directives.trim().is_empty() => match EnvFilter::try_new(&directives) {
            Ok(f) => (f, None),
            Err(e) => (fallback_filter(default_level), Some((directives, e))),
        },
        _ => (fallback_filter(default_level), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let installed = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // Reported only once a subscriber exists, so the warning is not lost.
    if installed.is_ok()
        && let Some((directives, e)) = rejected
    {
        tracing::warn!(variable = LOG_ENV, value = %directives, error = %e, "ignoring invalid log filter");
    }
}

fn fallback_filter(default_level: &str) -> EnvFilter {
    EnvFilter::try_new(default_level).unwrap_or_else(|_| EnvFilter::new("info"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_twice_is_harmless() {
        init_tracing(LogFormat::Plain, "info");
        init_tracing(LogFormat::Json, "debug");
        tracing::info!("still logging");
    }

    #[test]
    fn format_names() {
        #[derive(Deserialize)]
        struct W {
            f: LogFormat,
        }
        let w: Result<W, _> = toml::from_str("f = \"json\"");
        assert!(matches!(w, Ok(W { f: LogFormat::Json })));
        assert_eq!(LogFormat::default(), LogFormat::Plain);
    }
}
