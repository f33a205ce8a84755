//! The HTTP edge every service shares: the server loop ([`serve`]: header-read timeout,
//! connection bound, graceful shutdown), the middleware stack ([`edge_layers`]: client
//! resolution behind trusted proxies, request ids, traces, access logs, metrics, response
//! hardening, errors in the caller's format), problem+json errors, a JSON extractor whose
//! rejections are problems too, and the operational endpoints.

mod extract;
mod forwarded;
mod html;
mod middleware;
mod ops;
mod problem;
mod serve;

pub use extract::{ApiJson, ClientIp};
pub use forwarded::{BadProxyRange, ClientInfo, TrustedProxies};
pub use html::{error_page, CONTENT_SECURITY_POLICY};
pub use middleware::{edge_layers, method_label, EdgeConfig};
pub use ops::{health_router, ops_router, Readiness, ReadinessCheck};
pub use problem::{standard, FieldError, Problem, StandardProblem, STANDARD};
pub use serve::{serve, ServeConfig};
