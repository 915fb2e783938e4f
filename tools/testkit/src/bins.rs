//! The workspace's binaries, found where cargo put them for this test.

use std::path::PathBuf;

/// The path of binary `name` in the cargo profile folder this test runs from
/// (`target/debug/deps/TEST` → `target/debug/NAME`). Panics with what to run when the
/// binary was not built, instead of a bare "No such file or directory" at spawn.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's own path");
    let deps = exe.parent().expect("the test binary's folder");
    let profile = if deps.ends_with("deps") { deps.parent().expect("cargo's profile folder") } else { deps };
    let path = profile.join(name);
    assert!(
        path.is_file(),
        "{name} was not built at {}: the tests start it; run `cargo build --workspace --bins` \
         or the test command (`scripts/test.sh`), which builds every binary the tests start",
        path.display()
    );
    path
}
