//! The `annals` binary: the annals command line around the reference
//! credit domain (examples/credit).

fn main() -> std::process::ExitCode {
    annals_credit::app().run()
}
