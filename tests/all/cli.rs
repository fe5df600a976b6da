//! `boulder transform` and `boulder check`, run as a user runs them.

use boulder_tests::{boulder_bin, components, root};
use std::process::Command;

fn boulder(args: &[&str]) -> std::process::Output {
    components();
    Command::new(boulder_bin())
        .args(args)
        .current_dir(root())
        .env("XDG_CACHE_HOME", root().join("target/test-cache-home"))
        .output()
        .expect("running boulder")
}

#[test]
fn transform_runs_the_example_config_on_the_sample_data() {
    let out = boulder(&[
        "transform",
        "--config",
        "boulder.example.toml",
        "--tenant",
        "ops",
        "--route",
        "tests/fixtures/sample.lp",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let kept: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        kept,
        vec![
            "cpu,host=web-01,cpu=cpu-total usage_user=12.5,usage_system=3.25,usage_idle=84.25 1764000000000000000",
            "cpu,host=web-02,cpu=cpu-total usage_user=40.0,usage_system=10.5,usage_idle=49.5 1764000000000000000",
            "mem_used_percent,host=web-01 value=61.2 1764000000000000000",
            "mem_used_percent,host=web-02 value=58.9 1764000000000000000",
            "disk_io,host=db-01,device=sda reads=1234i,writes=5678i 1764000000000000000",
            "net,host=web-01,interface=eth0 bytes_recv=982734u,bytes_sent=237890u 1764000000000000000",
            "system,host=web-01 load1=0.52,load5=0.61 1764000000000000000",
            "temperature_celsius,sensor=kitchen value=21.5 1764000000000000000",
        ]
    );
    assert!(stderr.contains("read        13 points"), "{stderr}");
    assert!(stderr.contains("line 14: invalid field value"), "{stderr}");
    assert!(
        stderr.contains("routed to other tenants 4 points"),
        "{stderr}"
    );
    assert!(stderr.contains("kept        8 points"), "{stderr}");
    assert!(
        stderr.contains(
            "1  tenant 'ops' stage 1 (validate): measurement does not start with a letter"
        ),
        "{stderr}"
    );
}

#[test]
fn transform_reads_stdin_and_reports_a_failing_batch() {
    let dir = root().join("target/test-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("panic.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime]\ncomponents_dir = {:?}\n[[tenants]]\nname = \"t\"\nchain = [{{ component = \"panic\" }}]\n",
            components().display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(boulder_bin())
        .args(["transform", "-c", config.to_str().unwrap()])
        .env("XDG_CACHE_HOME", root().join("target/test-cache-home"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"m f=1 1\nm f=2 2\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(
            "2  tenant 't' stage 1 (panic): batch failed: guest panicked: boom on measurement m at"
        ),
        "{stderr}"
    );
}

#[test]
fn check_accepts_the_example_and_names_a_bad_key() {
    let out = boulder(&["check", "--config", "boulder.example.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "boulder.example.toml: ok (2 tenants, 7 stages, with a router)"
    );

    let dir = root().join("target/test-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[tenants]]\nname = \"a\"\nlimits = { memroy = \"1MiB\" }\n",
    )
    .unwrap();
    let out = boulder(&["check", "--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("unknown field `memroy`"), "{stderr}");
}

/// A compiled-component cache folder that others can write to (mode 0777) is
/// refused with the folder, the problem and the way out; the same config with the
/// folder made private is accepted. What the cache holds runs as native code.
#[test]
fn check_refuses_a_cache_folder_that_others_can_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = root().join(format!("target/test-tmp/open-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = root().join(format!(
        "target/test-tmp/open-cache-{}.toml",
        std::process::id()
    ));
    std::fs::write(
        &config,
        format!(
            "[runtime]\ncomponents_dir = {:?}\ncache_dir = {:?}\n\n[[tenants]]\nname = \"ops\"\nchain = [{{ component = \"validate\" }}]\n",
            components().display().to_string(),
            dir.display().to_string()
        ),
    )
    .unwrap();
    let check = || boulder(&["check", "--config", config.to_str().unwrap()]);
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("runtime.cache_dir {}", dir.display()))
            && stderr.contains("can be written by its group or by others (mode 777)")
            && stderr.contains("set runtime.cache = false"),
        "{stderr}"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_dir(&dir).unwrap().count() > 0,
        "the private folder is used as the cache"
    );
}
