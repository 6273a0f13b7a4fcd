//! ESB (edge-serverless-box): run AWS Lambda functions on your own machines.
//!
//! This facade re-exports ESB's crates, each usable alone:
//! [`runtime`] (sandboxes and the Lambda Runtime API), [`pool`] (warm pools and queues),
//! [`router`] (configuration and routes), [`events`] (API Gateway events), [`logs`]
//! (VictoriaLogs), and [`proto`] (the agent's gRPC API).

pub use esb_events as events;
pub use esb_logs as logs;
pub use esb_pool as pool;
pub use esb_proto as proto;
pub use esb_router as router;
pub use esb_runtime as runtime;
