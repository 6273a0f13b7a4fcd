//! `esb-testfn`: the test function as a Lambda bootstrap.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    esb_testfn::serve().await
}
