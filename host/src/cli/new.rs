//! `boulder new transform NAME`: a tenant's transform crate, ready to test, build
//! and try.
//!
//! The files are the ones under `host/templates/transform/`, compiled into the
//! binary so that an installed `boulder` needs no checkout to write them; only the
//! SDK they depend on has to be found on disk.

use anyhow::{bail, Context, Result};
use std::borrow::Cow;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// A transform crate: a sample `process` with its native tests, the build
    /// settings for wasm32, a config and input to try it with `boulder transform`,
    /// and a README with the commands.
    Transform(TransformArgs),
}

#[derive(Debug, clap::Args)]
pub struct TransformArgs {
    /// The crate's name: ASCII letters, digits, `-` and `_`, starting with a letter.
    name: String,
    /// The folder to write it to (created; if it exists it must be empty).
    /// Default: ./NAME.
    #[arg(long)]
    path: Option<PathBuf>,
    /// The boulder-guest-sdk crate to depend on: the `guest-sdk` folder of a
    /// Boulder checkout. Default: the one this `boulder` was built from.
    #[arg(long)]
    sdk: Option<PathBuf>,
}

/// A file of the new crate.
struct Template {
    /// Where it goes in the crate.
    path: &'static str,
    /// What it is, for the summary printed at the end.
    about: &'static str,
    text: &'static str,
}

macro_rules! template {
    ($path:literal, $about:literal) => {
        Template {
            path: $path,
            about: $about,
            text: include_str!(concat!("../../templates/transform/", $path)),
        }
    };
}

const TEMPLATES: &[Template] = &[
    template!("Cargo.toml", "the crate, with boulder-guest-sdk by path"),
    template!(
        ".cargo/config.toml",
        "builds for wasm32-unknown-unknown, with SIMD"
    ),
    template!(".gitignore", "keeps target/ out of git"),
    template!("src/lib.rs", "a sample transform and its native tests"),
    template!("boulder.toml", "a config to try it with"),
    template!("sample.lp", "two points to try it on"),
    template!("README.md", "the commands to test, build and try it"),
];

/// Names that are valid identifiers but would shadow a crate of Rust's own
/// (cargo refuses `test` and warns about the others).
const RESERVED: &[&str] = &["alloc", "core", "proc_macro", "std", "test"];

pub fn run(args: NewArgs) -> Result<()> {
    match args.what {
        What::Transform(a) => transform(a),
    }
}

fn transform(args: TransformArgs) -> Result<()> {
    check_name(&args.name)?;
    let dir = args.path.unwrap_or_else(|| PathBuf::from(&args.name));
    let sdk = find_sdk(args.sdk.as_deref())?;
    // The SDK is a member of Boulder's workspace (it inherits its version and
    // dependencies from it), so its parent is always a checkout.
    let checkout = sdk.parent().context("the SDK folder has no parent")?;
    let boulder_bin = std::env::current_exe().context("finding this boulder binary")?;
    let values = Values {
        crate_name: &args.name,
        sdk: path_str(&sdk)?,
        checkout: path_str(checkout)?,
        boulder_bin: path_str(&boulder_bin)?,
    };

    check_target(&dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for t in TEMPLATES {
        write_new(&dir.join(t.path), &render(t.text, &values)?)?;
        written.push((t.path, t.about));
    }
    // Start from the dependency versions Boulder's own build is tested with (cargo
    // keeps those of them the crate uses and drops the rest), not from whatever is
    // newest on crates.io on the day.
    let lock = checkout.join("Cargo.lock");
    if lock.is_file() {
        let text = std::fs::read_to_string(&lock)
            .with_context(|| format!("reading {}", lock.display()))?;
        write_new(&dir.join("Cargo.lock"), &text)?;
        written.push((
            "Cargo.lock",
            "the dependency versions Boulder is tested with",
        ));
    }

    println!("Created transform `{}` in {}:", args.name, dir.display());
    for (path, about) in written {
        println!("  {path:<20}{about}");
    }
    println!("boulder-guest-sdk: {}", values.sdk);
    println!(
        "\nNext:\n  cd {}\n  cargo test --target host-tuple\n  \
         (source {} && cargo component build --release)\n  \
         boulder transform --config boulder.toml sample.lp",
        quote(path_str(&dir)?)?,
        quote(&format!("{}/scripts/guest-env.sh", values.checkout))?,
    );
    Ok(())
}

/// Checks that `name` can be the crate's package name, and so its library's name
/// (with `-` as `_`) and the file name of its component.
///
/// Stricter than cargo, which also takes non-ASCII letters: the name ends up in
/// file names, config paths and shell commands, where ASCII needs no care.
fn check_name(name: &str) -> Result<()> {
    let rule = "a transform's name is a crate name: ASCII letters, digits, `-` and `_`, \
                starting with a letter";
    let Some(first) = name.chars().next() else {
        bail!("the name is empty ({rule})");
    };
    if !first.is_ascii_alphabetic() {
        bail!("invalid name {name:?}: it starts with {first:?} ({rule})");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        bail!("invalid name {name:?}: it contains {c:?} ({rule})");
    }
    let lib = name.replace('-', "_");
    // syn knows Rust's keywords, reserved ones included, in every edition.
    if syn::parse_str::<syn::Ident>(&lib).is_err() {
        bail!("invalid name {name:?}: `{lib}` is a Rust keyword, so it cannot name a crate");
    }
    if RESERVED.contains(&lib.as_str()) {
        bail!("invalid name {name:?}: it is the name of Rust's own `{lib}` crate");
    }
    Ok(())
}

/// The SDK's folder, canonical: `--sdk`, or the one beside this binary's sources.
fn find_sdk(given: Option<&Path>) -> Result<PathBuf> {
    let (path, what) = match given {
        Some(path) => (path.to_owned(), "--sdk"),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk"),
            "the boulder-guest-sdk this boulder was built from,",
        ),
    };
    let hint = "pass --sdk with the guest-sdk folder of a Boulder checkout";
    let sdk = path
        .canonicalize()
        .with_context(|| format!("{what} {}: not found; {hint}", path.display()))?;
    let manifest = sdk.join("Cargo.toml");
    let name = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|toml| Some(toml.get("package")?.get("name")?.as_str()?.to_owned()));
    if name.as_deref() != Some("boulder-guest-sdk") {
        bail!(
            "{what} {}: not the boulder-guest-sdk crate (no Cargo.toml naming it); {hint}",
            sdk.display()
        );
    }
    Ok(sdk)
}

/// Refuses a folder that exists and is not empty, so nothing is overwritten.
fn check_target(dir: &Path) -> Result<()> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) if dir.exists() => bail!("{} exists and is not a folder", dir.display()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    if entries.next().is_some() {
        bail!(
            "{} already exists and is not empty; choose another --path, or remove it",
            dir.display()
        );
    }
    Ok(())
}

/// What the templates' placeholders stand for.
struct Values<'a> {
    crate_name: &'a str,
    sdk: &'a str,
    checkout: &'a str,
    boulder_bin: &'a str,
}

/// Fills in a template's `{{placeholders}}`.
///
/// Plain replacement rather than a template engine: there are a handful of
/// placeholders and no logic, and an engine's syntax would collide with the braces
/// of the Rust and TOML in the templates.
fn render(template: &str, v: &Values<'_>) -> Result<String> {
    let checkout = |rest: &str| quote(&format!("{}/{rest}", v.checkout)).map(Cow::Owned);
    let replacements = [
        ("{{crate_name}}", Cow::Borrowed(v.crate_name)),
        ("{{lib_name}}", Cow::Owned(v.crate_name.replace('-', "_"))),
        ("{{sdk_path}}", Cow::Owned(toml_basic_string(v.sdk))),
        ("{{sdk_dir}}", Cow::Borrowed(v.sdk)),
        ("{{boulder_bin}}", Cow::Borrowed(v.boulder_bin)),
        ("{{guest_env}}", checkout("scripts/guest-env.sh")?),
        (
            "{{componentize_manifest}}",
            checkout("scripts/componentize/Cargo.toml")?,
        ),
        ("{{tools_dir}}", checkout("target/tools")?),
    ];
    let mut text = template.to_owned();
    for (placeholder, value) in replacements {
        text = text.replace(placeholder, &value);
    }
    Ok(text)
}

/// The contents of a TOML basic string (`"..."`) holding `s`. `path_str` has
/// already refused control characters, so only these two need escaping.
fn toml_basic_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A path as text for the templates, which are UTF-8 and hold it in TOML strings
/// and shell commands.
fn path_str(path: &Path) -> Result<&str> {
    match path.to_str() {
        Some(s) if !s.chars().any(char::is_control) => Ok(s),
        _ => bail!(
            "{}: a path the generated files cannot name (it is not UTF-8, or has control characters)",
            path.display()
        ),
    }
}

/// `s` quoted for a POSIX shell, when it needs quoting.
fn quote(s: &str) -> Result<String> {
    shlex::try_quote(s)
        .map(Cow::into_owned)
        .with_context(|| format!("{s:?} cannot be quoted for a shell"))
}

/// Writes a file that must not exist yet, creating its folder.
fn write_new(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names_are_accepted() {
        for name in ["add-env", "a", "ms_to_seconds", "Tenant2", "x-1-y_2"] {
            check_name(name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn invalid_names_are_refused_with_the_reason() {
        for (name, reason) in [
            ("", "the name is empty"),
            ("1st", "starts with '1'"),
            ("-x", "starts with '-'"),
            ("_x", "starts with '_'"),
            ("my transform", "contains ' '"),
            ("a.b", "contains '.'"),
            ("a/b", "contains '/'"),
            ("café", "contains 'é'"),
            ("fn", "`fn` is a Rust keyword"),
            ("self", "`self` is a Rust keyword"),
            ("async", "`async` is a Rust keyword"),
            ("try", "`try` is a Rust keyword"),
            ("std", "Rust's own `std` crate"),
            ("proc-macro", "Rust's own `proc_macro` crate"),
            ("test", "Rust's own `test` crate"),
        ] {
            let error = check_name(name).expect_err(name).to_string();
            assert!(error.contains(reason), "{name:?}: {error}");
        }
    }

    fn template(path: &str) -> &'static str {
        TEMPLATES.iter().find(|t| t.path == path).unwrap().text
    }

    fn values(sdk: &str) -> Values<'_> {
        Values {
            crate_name: "add-env",
            sdk,
            checkout: "/src/my boulder",
            boulder_bin: "/usr/local/bin/boulder",
        }
    }

    #[test]
    fn every_placeholder_is_filled_in() {
        for t in TEMPLATES {
            let text = render(t.text, &values("/src/boulder/guest-sdk")).unwrap();
            assert!(!text.contains("{{"), "{}: {text}", t.path);
        }
    }

    #[test]
    fn the_manifest_names_the_crate_and_the_sdk_whatever_the_path() {
        let sdk = r#"/src/a "quoted" \ path/guest-sdk"#;
        let manifest: toml::Table = render(template("Cargo.toml"), &values(sdk))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(manifest["package"]["name"].as_str(), Some("add-env"));
        assert_eq!(
            manifest["dependencies"]["boulder-guest-sdk"]["path"].as_str(),
            Some(sdk)
        );
        assert!(manifest["workspace"].as_table().unwrap().is_empty());
    }

    #[test]
    fn shell_commands_quote_paths() {
        let text = render(template("README.md"), &values("/src/boulder/guest-sdk")).unwrap();
        assert!(
            text.contains("(source '/src/my boulder/scripts/guest-env.sh' && "),
            "{text}"
        );
    }

    #[test]
    fn a_path_with_control_characters_is_refused() {
        assert!(path_str(Path::new("/tmp/a\nb")).is_err());
    }
}
