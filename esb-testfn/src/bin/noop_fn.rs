//! `noop_fn`: the no-op function of [`esb_testfn::noop`] (a minimal custom runtime) as a
//! Lambda bootstrap.

fn main() -> std::io::Result<()> {
    esb_testfn::noop::run()
}
