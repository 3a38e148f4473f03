//! The `leakguard` command: `analyze`, `top`, `report` (see `leakguard --help`). The logic
//! lives in the library's `cli` module (feature `cli`).

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(leakguard::cli::run(std::env::args_os().skip(1)))
}
