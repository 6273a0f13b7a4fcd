//! The box's companions: the S3 and DynamoDB services functions are wired to, their flags,
//! and the variables every function gets.

mod args;
mod env;

pub use args::ServiceArgs;
pub use env::{FunctionWiring, under};
