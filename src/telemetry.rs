//! Logs: human-readable by default, JSON lines for log pipelines; the level is
//! set with RUST_LOG (default `info`). Under a simulated clock every line
//! says so (field `clock`), so that no one mistakes its dates for real ones.

use clap::ValueEnum;
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{
    self, Format, FormatEvent, FormatFields, JsonFields, Writer,
};
use tracing_subscriber::registry::LookupSpan;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// `simulated_clock`: how a simulated clock describes itself, for every line.
pub fn init(format: LogFormat, simulated_clock: Option<String>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder
            .event_format(Annotated {
                inner: format::format(),
                clock: simulated_clock,
                json: false,
            })
            .init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(Annotated {
                inner: format::format().json().flatten_event(true),
                clock: simulated_clock,
                json: true,
            })
            .init(),
    }
}

/// A log line format with field `clock` added when the clock is simulated.
struct Annotated<F> {
    inner: Format<F>,
    clock: Option<String>,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for Annotated<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    Format<F>: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some(clock) = &self.clock else {
            return self.inner.format_event(context, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(context, Writer::new(&mut line), event)?;
        match line.strip_prefix('{').filter(|_| self.json) {
            Some(rest) => {
                let clock = serde_json::to_string(clock).map_err(|_| std::fmt::Error)?;
                write!(writer, "{{\"clock\":{clock},{rest}")
            }
            None => {
                let line = line.trim_end_matches('\n');
                writeln!(writer, "{line} clock={clock:?}")
            }
        }
    }
}
