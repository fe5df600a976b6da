//! `boulder new transform`: the crate it writes passes its own tests, builds both
//! ways guests are built, and runs under `boulder transform`, each by the commands
//! its README gives.

use boulder_tests::{boulder_bin, root, run_ok};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What the sample transform makes of the sample input, as its README says.
const KEPT: &str = "http,host=a latency_seconds=0.25,status=200i 1700000000000000000\n";

/// A fresh folder under target/test-new for one test of this process.
fn scratch(test: &str) -> PathBuf {
    let dir = root()
        .join("target/test-new")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn boulder(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(boulder_bin());
    command
        .args(args)
        .current_dir(dir)
        .env("XDG_CACHE_HOME", root().join("target/test-cache-home"));
    command
}

/// Writes a transform crate named `name` into a scratch folder and returns its folder.
fn new_crate(test: &str, name: &str) -> PathBuf {
    let crate_dir = scratch(test).join(name);
    let out = run_ok(&mut boulder(
        &root(),
        &[
            "new",
            "transform",
            name,
            "--path",
            crate_dir.to_str().unwrap(),
        ],
    ));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("Created transform `{name}` in ")),
        "{stdout}"
    );
    // The guests' target dir, for the standard library built from source and the
    // SDK's dependencies: built once for all guests, they are most of the time a
    // build takes. Linked rather than named by CARGO_TARGET_DIR, so that the
    // README's commands and boulder.toml's path into target/ work as written.
    std::os::unix::fs::symlink(root().join("target/guests"), crate_dir.join("target")).unwrap();
    crate_dir
}

/// The README's shell blocks, in order.
fn readme_commands(crate_dir: &Path) -> Vec<String> {
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
    let blocks: Vec<String> = readme
        .split("```sh\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap().to_owned())
        .collect();
    assert_eq!(blocks.len(), 4, "test, build, plain build, try:\n{readme}");
    assert!(
        readme.contains(&format!("```text\n{KEPT}```")),
        "the README shows what `try` prints:\n{readme}"
    );
    blocks
}

/// Runs a block of the README as a user would: in bash, in the crate's folder, with
/// this build's `boulder` on the PATH.
fn run_block(crate_dir: &Path, block: &str) -> Output {
    let bin_dir = boulder_bin().parent().unwrap().to_owned();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path =
        std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(&path))).unwrap();
    run_ok(
        Command::new("bash")
            .args(["-e", "-c", block])
            .current_dir(crate_dir)
            .env("PATH", path)
            .env("XDG_CACHE_HOME", root().join("target/test-cache-home"))
            // The crate's own target/ (the link above), whatever the caller's setting.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET"),
    )
}

/// Runs the README's `boulder transform` block and checks what it prints.
fn try_it(crate_dir: &Path, lib_name: &str, block: &str) {
    let out = run_block(crate_dir, block);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), KEPT);
    let stderr = String::from_utf8(out.stderr).unwrap();
    let dropped = format!(
        "stage 1 (target/wasm32-unknown-unknown/release/{lib_name}.wasm): measurement listed in drop"
    );
    assert!(stderr.contains(&dropped), "{stderr}");
}

#[test]
fn a_new_transform_passes_its_tests_and_builds_with_cargo_component() {
    boulder_tests::require_cargo_component();
    let crate_dir = new_crate("component", "ms-to-seconds");
    assert!(
        crate_dir.join("Cargo.lock").is_file(),
        "seeded from Boulder's"
    );
    let [test, build, _, try_block] = <[String; 4]>::try_from(readme_commands(&crate_dir)).unwrap();

    let out = run_block(&crate_dir, &test);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("test result: ok. 3 passed"), "{stdout}");

    run_block(&crate_dir, &build);
    try_it(&crate_dir, "ms_to_seconds", &try_block);
    std::fs::remove_dir_all(crate_dir.parent().unwrap()).unwrap();
}

#[test]
fn a_new_transform_builds_with_plain_cargo_and_wit_component() {
    // Another name than the test above: the two share a target dir.
    let crate_dir = new_crate("plain", "plain-ms");
    let [_, _, build, try_block] = <[String; 4]>::try_from(readme_commands(&crate_dir)).unwrap();
    run_block(&crate_dir, &build);
    try_it(&crate_dir, "plain_ms", &try_block);
    std::fs::remove_dir_all(crate_dir.parent().unwrap()).unwrap();
}

#[test]
fn new_writes_to_dot_name_by_default_and_refuses_bad_names_and_used_folders() {
    let dir = scratch("errors");
    let failure = |args: &[&str]| {
        let out = boulder(&dir, args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    };

    // Default folder: ./NAME, with the SDK this boulder was built from.
    run_ok(&mut boulder(&dir, &["new", "transform", "add-env"]));
    let manifest = std::fs::read_to_string(dir.join("add-env/Cargo.toml")).unwrap();
    let sdk = root().join("guest-sdk").canonicalize().unwrap();
    assert!(
        manifest.contains(&format!(
            "boulder-guest-sdk = {{ path = {:?} }}",
            sdk.to_str().unwrap()
        )),
        "{manifest}"
    );
    assert!(manifest.contains("\n[workspace]\n"), "{manifest}");
    for file in [
        ".cargo/config.toml",
        "src/lib.rs",
        "README.md",
        "boulder.toml",
        "sample.lp",
    ] {
        assert!(dir.join("add-env").join(file).is_file(), "{file}");
    }

    for (name, why) in [
        ("1st", "starts with '1'"),
        ("fn", "is a Rust keyword"),
        ("a b", "contains ' '"),
    ] {
        let stderr = failure(&["new", "transform", name]);
        assert!(
            stderr.contains(&format!("invalid name {name:?}")) && stderr.contains(why),
            "{stderr}"
        );
        assert!(!dir.join(name).exists());
    }

    // A folder in use is left alone; an empty one is fine.
    let stderr = failure(&["new", "transform", "add-env"]);
    let used = dir.join("add-env");
    assert!(
        stderr.contains("add-env already exists and is not empty"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(used.join("Cargo.toml")).unwrap(),
        manifest
    );
    std::fs::create_dir(dir.join("empty")).unwrap();
    run_ok(&mut boulder(
        &dir,
        &["new", "transform", "other", "--path", "empty"],
    ));
    assert!(dir.join("empty/src/lib.rs").is_file());

    let stderr = failure(&["new", "transform", "x", "--sdk", "no-such-sdk"]);
    assert!(stderr.contains("--sdk no-such-sdk: not found"), "{stderr}");
    let stderr = failure(&["new", "transform", "x", "--sdk", "."]);
    assert!(
        stderr.contains("not the boulder-guest-sdk crate"),
        "{stderr}"
    );
    assert!(!dir.join("x").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
