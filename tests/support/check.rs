//! Running the `sssonector` binary on a config file written for the test.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

/// A `.yaml` file holding `text`, removed when dropped.
pub fn temp_config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    f.write_all(text.as_bytes()).expect("write temp file");
    f.flush().expect("flush temp file");
    f
}

/// The binary with `args`, its log at warn; waits for it to exit. The data plane is the
/// default one (`auto`): what `check` prints must not depend on the suite's driver pass.
pub fn sssonector(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sssonector"))
        .args(args)
        .env("SSSONECTOR_LOG", "warn")
        .env_remove("SSSONECTOR_DATA_PLANE")
        .output()
        .expect("run sssonector")
}

/// `sssonector check --config path`.
pub fn check_file(path: &Path) -> Output {
    sssonector(&["check", "--config", &path.to_string_lossy()])
}
