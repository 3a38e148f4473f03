//! The `leakguard` command-line tool (the core crate's binary, feature `cli`), built by cargo
//! for the tests and run as a child process.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

/// The path of the `leakguard` binary, brought up to date by cargo first (once per test
/// process), in the profile of the running tests.
pub fn leakguard_binary() -> PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);
    // This test executable lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let release = profile_dir.file_name().is_some_and(|p| p == "release");
    let path = profile_dir.join("leakguard");
    let mut built = BUILT.lock().unwrap();
    if !*built {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "leakguard-oom",
            "--features",
            "cli",
            "--bin",
            "leakguard",
        ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "building the leakguard binary failed");
        *built = true;
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Runs `leakguard ARGS` to completion with extra environment variables (the `LEAKGUARD_*`
/// ones of the test runner's environment are removed first) and no input.
pub fn run_leakguard(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(leakguard_binary());
    for (k, _) in std::env::vars() {
        if k.starts_with("LEAKGUARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}
