//! Both ways of building guests: a tenant's crate outside this workspace with
//! `cargo component`, and plain cargo plus wit-component.

use boulder::runtime::Chain;
use boulder_tests::{boulder_bin, components, config, lines, root, run_ok, runtime, to_lines};
use std::process::Command;

/// Runs a shell command with the guest toolchain environment of `scripts/guest-env.sh`.
fn with_guest_env(script: &str, dir: &std::path::Path) -> Command {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!(
            "source {:?} && {script}",
            root().join("scripts/guest-env.sh")
        ))
        .current_dir(dir);
    command
}

#[test]
fn an_out_of_tree_tenant_crate_builds_with_cargo_component_and_runs_under_transform() {
    boulder_tests::require_cargo_component();
    let crate_dir = root().join("tests/tenant-example");
    let target_dir = root().join("target/guests");
    // Exactly the tenant's command; the crate's .cargo/config.toml picks the target.
    run_ok(
        with_guest_env("cargo component build --release --quiet", &crate_dir)
            .env("CARGO_TARGET_DIR", &target_dir),
    );
    let wasm = target_dir.join("wasm32-unknown-unknown/release/tenant_example.wasm");
    assert!(wasm.is_file(), "{} missing", wasm.display());

    let dir = root().join("target/test-tenant");
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("boulder.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
            [runtime]
            components_dir = {:?}
            [[tenants]]
            name = "home"
            chain = [
                {{ component = "validate" }},
                {{ component = {:?}, params = {{ env = "prod", broken_sensors = ["s9"] }} }},
                {{ component = "flip-single-fields" }},
            ]
            "#,
            components().display().to_string(),
            wasm.display().to_string()
        ),
    )
    .unwrap();
    let input = dir.join("in.lp");
    std::fs::write(
        &input,
        "temp,sensor=s1 fahrenheit=212 1\ntemp,sensor=s9 fahrenheit=1 2\n",
    )
    .unwrap();
    let out = run_ok(Command::new(boulder_bin()).args([
        "transform",
        "-c",
        config_path.to_str().unwrap(),
        input.to_str().unwrap(),
    ]));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "temp_celsius,sensor=s1,env=prod value=100.0 1\n"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("tenant_example.wasm): broken sensor"),
        "{stderr}"
    );
}

#[test]
fn plain_cargo_and_wit_component_build_a_working_guest() {
    components();
    let out_dir = root().join("target/test-plain-components");
    run_ok(
        Command::new(root().join("scripts/build-guests.sh"))
            .arg("flip-single-fields")
            .env("BOULDER_COMPONENTIZER", "plain")
            .env("BOULDER_GUEST_OUT", &out_dir),
    );
    let config = config(&format!(
        "[[tenants]]\nname = \"t\"\nchain = [{{ component = {:?} }}]\n",
        out_dir
            .join("flip-single-fields.wasm")
            .display()
            .to_string()
    ));
    let runtime = runtime(&config);
    let chain = Chain::load(&runtime, &config, &config.tenants[0]).unwrap();
    let out = chain.run(&lines("cpu usage=1 1", "m")).unwrap();
    assert_eq!(to_lines(&out.batch), vec!["cpu_usage value=1.0 1"]);
}
