//! The HTTP edge every service shares: problem+json errors, a JSON extractor whose
//! rejections are problems too, the middleware stack, and the operational endpoints.

mod extract;
mod middleware;
mod ops;
mod problem;

pub use extract::{ApiJson, ClientIp};
pub use middleware::{edge_layers, EdgeConfig};
pub use ops::{ops_router, Readiness, ReadinessCheck};
pub use problem::{FieldError, Problem};
