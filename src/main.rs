//! The `annals` binary: the annals command line around the reference
//! credit domain.

fn main() -> std::process::ExitCode {
    annals::App::reference().run()
}
