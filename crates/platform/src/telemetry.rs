//! Logs, trace context and metrics, set up the same way for every process.
//!
//! * Logs are JSON lines (or pretty text for a terminal) carrying the `trace_id` of the
//!   request or message being handled. The default, [`LogFormat::Auto`], picks pretty text
//!   when standard output is a terminal and JSON otherwise.
//! * The trace context is a W3C `traceparent`, read with OpenTelemetry's
//!   `TraceContextPropagator` (no parser of our own). The HTTP edge reads it from the
//!   incoming request (or starts a new trace), and it is kept in a task-local for the
//!   duration of the request or message, so an event written to the outbox carries it
//!   onward and the consumer of that event continues the same trace.
//! * Metrics go to one process-wide Prometheus recorder rendered at `/metrics`.

use std::{collections::HashMap, future::Future, sync::OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::{propagation::TextMapPropagator, trace::TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rand::RngCore;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `Pretty` when standard output is a terminal, `Json` otherwise: `cargo run` reads
    /// well, and a container (whose output is a pipe) still logs JSON.
    #[default]
    Auto,
    Json,
    Pretty,
}

impl LogFormat {
    /// The concrete format, given whether standard output is a terminal. Never `Auto`.
    pub fn resolve(self, stdout_is_terminal: bool) -> Self {
        match self {
            Self::Auto if stdout_is_terminal => Self::Pretty,
            Self::Auto => Self::Json,
            concrete => concrete,
        }
    }

    /// The concrete format for this process's standard output.
    pub fn for_this_process(self) -> Self {
        use std::io::IsTerminal;
        self.resolve(std::io::stdout().is_terminal())
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!(
                "log format must be auto, json or pretty, not {other:?}"
            )),
        }
    }
}

/// Keeps telemetry exporters alive; dropping it flushes the spans not yet exported.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

type BoxedLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

fn fmt_layer(format: LogFormat) -> BoxedLayer {
    use tracing_subscriber::{fmt, Layer};
    match format.for_this_process() {
        LogFormat::Json | LogFormat::Auto => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .boxed(),
        LogFormat::Pretty => fmt::layer().compact().boxed(),
    }
}

/// Installs logging and, when `otlp_endpoint` is set, trace export over OTLP/HTTP for the
/// process. Calling it again (as tests do) keeps the first installation.
pub fn init(format: LogFormat, filter: &str, otlp_endpoint: Option<&str>) -> TelemetryGuard {
    use tracing_subscriber::{prelude::*, EnvFilter};
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(fmt_layer(format));
    #[cfg(feature = "otlp")]
    {
        let provider = otlp_endpoint.and_then(|endpoint| match otlp::provider(endpoint) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("OTLP export disabled: {e}");
                None
            }
        });
        let layer = provider.as_ref().map(otlp::layer);
        let _ = registry.with(layer).with(filter).try_init();
        TelemetryGuard { provider }
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = registry.with(filter).try_init();
        if let Some(endpoint) = otlp_endpoint {
            tracing::warn!(
                endpoint,
                "this build has no OTLP support (feature `otlp`); traces stay in the logs"
            );
        }
        TelemetryGuard {}
    }
}

/// Logging only.
pub fn init_logging(format: LogFormat, filter: &str) {
    let _guard = init(format, filter, None);
}

#[cfg(feature = "otlp")]
mod otlp {
    //! OTLP/HTTP (protobuf) export of the `tracing` spans, continuing the W3C trace the
    //! HTTP edge or the bus consumer started, so exported spans share the `trace_id` the
    //! logs carry.
    use std::time::Duration;

    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
    };
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::{
        trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider},
        Resource,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    pub fn provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
        let endpoint = endpoint.trim_end_matches('/');
        let url = if endpoint.ends_with("/v1/traces") {
            endpoint.to_owned()
        } else {
            format!("{endpoint}/v1/traces")
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(Duration::from_secs(5))
            .build()?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(Duration::from_millis(500))
                    .build(),
            )
            .build();
        Ok(SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(Resource::builder().with_service_name("rendermart").build())
            .build())
    }

    pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("rendermart"))
    }

    /// Makes `span` a child of the remote caller in `ctx`.
    pub fn set_parent(span: &tracing::Span, ctx: &super::TraceContext) {
        let (Ok(trace_id), Ok(span_id)) = (
            TraceId::from_hex(&ctx.trace_id),
            SpanId::from_hex(ctx.parent_span_id.as_deref().unwrap_or(&ctx.span_id)),
        ) else {
            return;
        };
        let remote = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

/// Ties `span` to the trace in `ctx` for the trace exporter (a no-op without OTLP).
pub fn attach_span(span: &tracing::Span, ctx: &TraceContext) {
    #[cfg(feature = "otlp")]
    otlp::set_parent(span, ctx);
    #[cfg(not(feature = "otlp"))]
    let _ = (span, ctx);
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            const LATENCY_BUCKETS: &[f64] = &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .expect("static bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. by a test harness); then ours
            // renders nothing, which is visible at /metrics rather than a crash.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// A W3C trace context: 16-byte trace id, 8-byte span ids, as lower-case hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: String,
    /// Our span in the trace.
    pub span_id: String,
    /// The caller's span, when the trace came from outside.
    pub parent_span_id: Option<String>,
}

impl TraceContext {
    /// A new root trace.
    pub fn new_root() -> Self {
        let mut trace = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut trace);
        Self {
            trace_id: hex::encode(trace),
            span_id: new_span_id(),
            parent_span_id: None,
        }
    }

    /// Continues the trace of a `traceparent` header (`00-<trace>-<span>-<flags>`) with a
    /// new span of our own; `None` when the header is not a valid W3C trace context.
    pub fn continue_from(traceparent: &str) -> Option<Self> {
        let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let context = TraceContextPropagator::new().extract(&carrier);
        let remote = context.span().span_context().clone();
        remote.is_valid().then(|| Self {
            trace_id: remote.trace_id().to_string(),
            span_id: new_span_id(),
            parent_span_id: Some(remote.span_id().to_string()),
        })
    }

    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

fn new_span_id() -> String {
    let mut span = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut span);
    hex::encode(span)
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// Runs `fut` with `ctx` as the current trace context.
pub async fn with_trace<F: Future>(ctx: TraceContext, fut: F) -> F::Output {
    CURRENT.scope(ctx, fut).await
}

/// The `traceparent` of the work in progress, if any.
pub fn current_traceparent() -> Option<String> {
    CURRENT.try_with(|c| c.traceparent()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_continued_or_rejected() {
        let root = TraceContext::new_root();
        let header = root.traceparent();
        let child = TraceContext::continue_from(&header).unwrap();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_eq!(child.parent_span_id.as_deref(), Some(root.span_id.as_str()));
        assert!(TraceContext::continue_from("garbage").is_none());
        // A zero span id and an unknown flag byte in version 00 are refused too.
        assert!(TraceContext::continue_from(&format!(
            "00-{}-{}-01",
            "a".repeat(32),
            "0".repeat(16)
        ))
        .is_none());
        assert!(TraceContext::continue_from(&format!(
            "00-{}-{}-01",
            "0".repeat(32),
            "a".repeat(16)
        ))
        .is_none());
    }

    #[test]
    fn auto_log_format_is_pretty_on_a_terminal_and_json_otherwise() {
        assert_eq!(LogFormat::Auto.resolve(true), LogFormat::Pretty);
        assert_eq!(LogFormat::Auto.resolve(false), LogFormat::Json);
        // An explicit choice wins either way.
        for tty in [true, false] {
            assert_eq!(LogFormat::Json.resolve(tty), LogFormat::Json);
            assert_eq!(LogFormat::Pretty.resolve(tty), LogFormat::Pretty);
        }
        assert_eq!(LogFormat::default(), LogFormat::Auto);
        assert_eq!("auto".parse::<LogFormat>(), Ok(LogFormat::Auto));
        assert!("yaml".parse::<LogFormat>().is_err());
    }

    #[tokio::test]
    async fn trace_context_is_visible_inside_its_scope_only() {
        assert!(current_traceparent().is_none());
        let ctx = TraceContext::new_root();
        let inside = with_trace(ctx.clone(), async { current_traceparent() }).await;
        assert_eq!(inside, Some(ctx.traceparent()));
    }
}
