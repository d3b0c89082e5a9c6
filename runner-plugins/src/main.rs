use std::process::ExitCode;

fn main() -> ExitCode {
    runner_plugins::app::main()
}
