//! `aws-lambda-rie`: the Runtime Interface Emulator stand-in of [`esb_testfn::rie`].

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(err) = esb_testfn::rie::run().await {
        eprintln!("aws-lambda-rie: {err}");
        std::process::exit(1);
    }
}
