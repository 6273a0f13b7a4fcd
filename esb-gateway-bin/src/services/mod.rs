//! The box's companions: the S3 and DynamoDB services functions are wired to, their flags,
//! the variables every function gets, and the services ESB starts itself.

mod args;
mod env;
mod supervisor;

pub use args::ServiceArgs;
pub use env::{FunctionWiring, under};
pub use supervisor::{ServiceError, Supervisor};
