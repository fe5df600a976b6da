//! docs/TENANTS.md, the tenants' guide, as its reader runs it: its shell blocks in
//! order, as one bash script, from `boulder new transform` to a component shipped
//! into a folder of live components. What the guide shows a command printing is
//! what it prints, its Rust excerpt is the generated crate's code, its config
//! parses, and every `boulder` command it gives exists.

use boulder_tests::{boulder_bin, root, run_ok};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUIDE: &str = "docs/TENANTS.md";

/// A fenced block of the guide.
struct Block {
    lang: String,
    text: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => {
                open = Some(Block {
                    lang: lang.trim().to_owned(),
                    text: String::new(),
                })
            }
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{GUIDE} ends inside a fenced block");
    blocks
}

/// A shell block, and the text blocks between it and the next shell block: what
/// the guide says it prints.
struct Step {
    script: String,
    shown: Vec<String>,
}

fn steps(blocks: &[Block]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for block in blocks {
        match (block.lang.as_str(), steps.last_mut()) {
            ("sh", _) => steps.push(Step {
                script: block.text.clone(),
                shown: Vec::new(),
            }),
            ("text", Some(step)) => step.shown.push(block.text.clone()),
            ("text", None) => panic!("{GUIDE}: a text block before any command"),
            _ => {}
        }
    }
    steps
}

impl Step {
    fn lines(&self) -> impl Iterator<Item = &str> {
        self.script.lines().map(str::trim)
    }

    fn runs(&self, prefix: &str) -> bool {
        self.lines().any(|l| l.starts_with(prefix))
    }
}

/// The one step with a line that starts with `prefix`.
fn step_running(steps: &[Step], prefix: &str) -> usize {
    let found: Vec<usize> = (0..steps.len())
        .filter(|&i| steps[i].runs(prefix))
        .collect();
    assert_eq!(found.len(), 1, "{GUIDE}: one shell block runs `{prefix}`");
    found[0]
}

/// Printed before each step, on stdout and stderr, to tell the steps' output apart.
fn marker(step: usize) -> String {
    format!("@@tenant-guide step {step}@@")
}

/// What step `step` printed, from the whole script's stdout or stderr.
fn printed(out: &str, step: usize) -> &str {
    let start = format!("\n{}\n", marker(step));
    let end = format!("\n{}\n", marker(step + 1));
    let from = out.find(&start).expect("the step's marker") + start.len();
    let to = from + out[from..].find(&end).expect("the next step's marker");
    &out[from..to]
}

fn quoted(path: &Path) -> String {
    format!("'{}'", path.to_str().unwrap().replace('\'', r"'\''"))
}

/// The names listed under `Commands:` in `boulder ARGS --help`.
fn subcommands(args: &[&str]) -> Vec<String> {
    let out = run_ok(Command::new(boulder_bin()).args(args).arg("--help"));
    let help = String::from_utf8(out.stdout).unwrap();
    help.split("\nCommands:\n")
        .nth(1)
        .map(|list| {
            list.lines()
                .take_while(|l| !l.trim().is_empty())
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Fails unless `line` names real subcommands and options of `boulder`.
fn check_boulder_line(line: &str) {
    let words: Vec<&str> = line.split_whitespace().skip(1).collect();
    let mut path: Vec<&str> = Vec::new();
    for word in &words {
        let known = subcommands(&path);
        if known.is_empty() || word.starts_with('-') {
            break;
        }
        assert!(
            known.iter().any(|k| k == word),
            "{GUIDE}: `{line}`: `boulder {}` has no subcommand {word:?} (it has {known:?})",
            path.join(" ")
        );
        path.push(word);
    }
    let out = run_ok(Command::new(boulder_bin()).args(&path).arg("--help"));
    let help = String::from_utf8(out.stdout).unwrap();
    for option in words.iter().filter(|w| w.starts_with("--")) {
        let option = option.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{option} ")) || help.contains(&format!("{option}\n")),
            "{GUIDE}: `{line}`: `boulder {}` has no option {option}",
            path.join(" ")
        );
    }
}

/// Lines of a summary, without the time it took.
fn untimed(summary: &str) -> Vec<&str> {
    summary
        .lines()
        .filter(|l| !l.starts_with("time "))
        .collect()
}

#[test]
fn the_tenant_guide_runs_from_a_new_crate_to_a_shipped_component() {
    let guide = std::fs::read_to_string(root().join(GUIDE)).unwrap();
    let blocks = blocks(&guide);
    let steps = steps(&blocks);
    for step in &steps {
        for line in step.lines().filter(|l| l.starts_with("boulder ")) {
            check_boulder_line(line);
        }
    }

    let new = step_running(&steps, "boulder new transform ");
    let new_line = steps[new]
        .lines()
        .find(|l| l.starts_with("boulder new transform "))
        .unwrap();
    let [_, _, _, name] = <[&str; 4]>::try_from(new_line.split_whitespace().collect::<Vec<_>>())
        .unwrap_or_else(|_| panic!("{GUIDE}: `{new_line}`: a name and nothing else, for ./NAME"));
    assert!(
        !steps[new].runs("cargo "),
        "{GUIDE}: the crate's target/ is linked after `boulder new`, before any build"
    );
    let transform = step_running(&steps, "boulder transform ");
    let check = step_running(&steps, "boulder check ");
    let test = step_running(&steps, "cargo test ");

    let work = root().join("target/test-guide").join(format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let home = work.join("tenant");
    let components = work.join("components");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&components).unwrap();
    // The version running before the guide ships its own: shipping must replace it
    // by a rename, which is what Boulder's watcher relies on to never read half a
    // file, not by writing into it.
    let live = components.join(format!("{name}.wasm"));
    std::fs::write(&live, b"the version that runs now").unwrap();
    let old_inode = std::fs::metadata(&live).unwrap().ino();

    // The guests' shared target dir holds the standard library built from source
    // and the SDK's dependencies, most of a build's time; linked rather than named
    // by CARGO_TARGET_DIR so that the guide's paths into target/ work as written.
    let guests = root().join("target/guests");
    std::fs::create_dir_all(&guests).unwrap();
    // Strict, so that a command of the guide that fails fails the test.
    let mut script = String::from("set -euo pipefail\n");
    for (i, step) in steps.iter().enumerate() {
        let mark = marker(i);
        script.push_str(&format!(
            "printf '\\n%s\\n' '{mark}'; printf '\\n%s\\n' '{mark}' >&2\n"
        ));
        script.push_str(&step.script);
        if i == new {
            let link = home.join(name).join("target");
            script.push_str(&format!("ln -sT {} {}\n", quoted(&guests), quoted(&link)));
        }
    }
    let mark = marker(steps.len());
    script.push_str(&format!(
        "printf '\\n%s\\n' '{mark}'; printf '\\n%s\\n' '{mark}' >&2\n"
    ));
    let script_file = work.join("guide.sh");
    std::fs::write(&script_file, &script).unwrap();

    // The guide's reader runs the `boulder` they built; the guide must hold for this
    // build's, not for one that happens to be installed.
    let bin_dir = boulder_bin().parent().unwrap().to_owned();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path =
        std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(&path))).unwrap();
    let out = run_ok(
        Command::new("bash")
            .arg(&script_file)
            .current_dir(&home)
            .env("PATH", path)
            .env("BOULDER_HOME", root())
            .env("COMPONENTS", &components)
            // Compiled components are cached with the other tests', not in the
            // user's home.
            .env("XDG_CACHE_HOME", root().join("target/test-cache-home"))
            // The crate's own target/ (the link), whatever the caller's setting.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET"),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();

    let [kept, summary] = <[String; 2]>::try_from(steps[transform].shown.clone())
        .unwrap_or_else(|_| panic!("{GUIDE}: `boulder transform` shows its stdout and stderr"));
    assert_eq!(
        printed(&stdout, transform),
        kept,
        "{GUIDE}: the kept points"
    );
    assert_eq!(
        untimed(printed(&stderr, transform)),
        untimed(&summary),
        "{GUIDE}: the summary"
    );
    assert_eq!(
        steps[check].shown,
        [printed(&stdout, check)],
        "{GUIDE}: what `boulder check` prints"
    );

    // The tests the guide adds to the crate ran, and passed.
    let added: Vec<&str> = steps
        .iter()
        .flat_map(|s| s.script.lines())
        .filter_map(|l| l.strip_prefix("+    fn "))
        .filter_map(|l| l.split('(').next())
        .collect();
    assert!(!added.is_empty(), "{GUIDE}: the change adds a test");
    let tested = printed(&stdout, test);
    for test in added {
        assert!(
            tested.contains(&format!("test tests::{test} ... ok")),
            "{test}:\n{tested}"
        );
    }

    let crate_dir = home.join(name);
    let lib = std::fs::read_to_string(crate_dir.join("src/lib.rs")).unwrap();
    let lib_lines: Vec<&str> = lib.lines().map(str::trim).collect();
    let rust: Vec<&Block> = blocks.iter().filter(|b| b.lang == "rust").collect();
    assert!(!rust.is_empty(), "{GUIDE} shows the transform's code");
    for line in rust.iter().flat_map(|b| b.text.lines()).map(str::trim) {
        if !line.is_empty() && line != "// ..." {
            assert!(
                lib_lines.contains(&line),
                "{GUIDE} shows a line that {name}/src/lib.rs does not have: {line}"
            );
        }
    }

    let configs: Vec<&Block> = blocks.iter().filter(|b| b.lang == "toml").collect();
    assert!(!configs.is_empty(), "{GUIDE} shows a tenant's config");
    for config in configs {
        if let Err(e) = boulder::config::Config::parse(&config.text, Path::new(GUIDE)) {
            panic!(
                "{GUIDE} shows a config Boulder refuses: {e}\n{}",
                config.text
            );
        }
    }

    let built = crate_dir.join(format!(
        "target/wasm32-unknown-unknown/release/{}.wasm",
        name.replace('-', "_")
    ));
    let shipped: Vec<PathBuf> = std::fs::read_dir(&components)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        shipped,
        std::slice::from_ref(&live),
        "only the live file is left"
    );
    assert!(
        std::fs::read(&live).unwrap() == std::fs::read(&built).unwrap(),
        "{} is not {}",
        live.display(),
        built.display()
    );
    assert_ne!(
        std::fs::metadata(&live).unwrap().ino(),
        old_inode,
        "the live file was written into, not replaced by a rename"
    );
    std::fs::remove_dir_all(&work).unwrap();
}
