//! Tenants' components replaced while Boulder runs (live swap): every point goes
//! through exactly one version, a broken file leaves the running version in place,
//! and `/metrics` says which version runs.

use boulder::runtime::component::content_hash;
use boulder_tests::services::*;
use boulder_tests::{components, poll, root};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The `versioned` test guest, rewritten to tag points `swap-version-<n>`.
fn versioned(n: u8) -> Vec<u8> {
    let mut wasm = std::fs::read(components().join("versioned.wasm")).expect("built guest");
    let marker = b"swap-version-1";
    let at: Vec<usize> = wasm
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| w == marker)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the version is in the component once");
    wasm[at[0] + marker.len() - 1] = b'0' + n;
    wasm
}

/// A test's name (its topic, with `partitions`) and a folder of its own for
/// component files.
fn start(prefix: &str, partitions: i32) -> (String, std::path::PathBuf) {
    require_services();
    let name = unique(prefix);
    create_topic(&name, partitions);
    let dir = root().join("target/test-swap").join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    (name, dir)
}

/// Replaces `path` as a tenant should: a new file renamed over the old one.
fn ship(path: &Path, bytes: &[u8]) {
    let new = path.with_extension("new");
    std::fs::write(&new, bytes).unwrap();
    std::fs::rename(&new, path).unwrap();
}

/// The `boulder_component_info` series of `tenant` (empty: the router), as their
/// sha256 labels.
fn running(boulder: &Boulder, tenant: &str) -> Vec<String> {
    let (_, text) = boulder.status("/metrics");
    let tenant = format!(r#"tenant="{tenant}""#);
    text.lines()
        .filter(|l| l.starts_with("boulder_component_info{") && l.contains(&tenant))
        .filter(|l| l.ends_with(" 1"))
        .filter_map(|l| Some(l.split("sha256=\"").nth(1)?.split('"').next()?.to_owned()))
        .collect()
}

/// Waits until `tenant` runs the one component `wasm`.
fn wait_running(boulder: &Boulder, tenant: &str, wasm: &[u8]) {
    let want = [content_hash(wasm)];
    poll(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || match running(boulder, tenant) {
            r if r == want => Ok(()),
            r => Err(format!(
                "{tenant:?} runs {r:?}, not {want:?}\n{}",
                boulder.log()
            )),
        },
    )
}

/// A stream of ≥ 100,000 points while the tenant's component is replaced by a
/// second version, then by a broken file, then by a third version: every point is
/// written once, tagged with exactly one version; each version took part of the
/// stream; the broken file was refused and counted, the second version running on.
#[test]
fn a_component_replaced_twice_under_load_tags_every_point_with_exactly_one_version() {
    let (name, dir) = start("swap", 2);
    let wasm = dir.join("tenant.wasm");
    ship(&wasm, &versioned(1));
    let boulder = Boulder::run(
        &name,
        &influx_config(
            &name,
            &format!(
                r#"
                [[tenants]]
                name = "ops"
                chain = [{{ component = {wasm:?} }}]
                outputs = [{{ url = "{vm}/api/v2/write", batch_age = "100ms" }}]
                "#,
                wasm = wasm.display().to_string(),
                vm = vm_a(),
            ),
        ),
    );
    let hash = |n: u8| content_hash(&versioned(n));
    let wait_running = |n: u8| wait_running(&boulder, "ops", &versioned(n));
    wait_running(1);

    // The stream: messages of 2,000 points, each point its own millisecond.
    let start_ms = now_ms() - 600_000;
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (done, topic) = (done.clone(), name.clone());
        std::thread::spawn(move || {
            let mut sent = 0i64;
            while sent < 100_000 || !done.load(Ordering::Relaxed) {
                let message: String = (sent..sent + 2_000)
                    .map(|i| format!("swap,test={topic} v={i} {}\n", (start_ms + i) * 1_000_000))
                    .collect();
                produce(&topic, &[(sent.to_string(), message.into_bytes())]);
                sent += 2_000;
                std::thread::sleep(Duration::from_millis(100));
            }
            sent as usize
        })
    };
    let written = |at_least: f64| {
        let series = r#"boulder_points_written_total{tenant="ops",output="ops-1"}"#;
        let now = boulder.metric(series).unwrap_or(0.0);
        poll(
            Duration::from_secs(60),
            Duration::from_millis(100),
            || match boulder.metric(series).unwrap_or(0.0) {
                n if n >= now + at_least => Ok(()),
                n => Err(format!("{n} written\n{}", boulder.log())),
            },
        )
    };
    written(10_000.0);
    ship(&wasm, &versioned(2));
    wait_running(2);
    written(10_000.0);
    let broken = versioned(3);
    ship(&wasm, &broken[..broken.len() / 2]);
    boulder.wait_metric(
        r#"boulder_component_load_failures_total{tenant="ops"}"#,
        1.0,
        Duration::from_secs(30),
    );
    assert_eq!(
        running(&boulder, "ops"),
        [hash(2)],
        "the second version runs on"
    );
    written(10_000.0);
    ship(&wasm, &versioned(3));
    wait_running(3);
    written(10_000.0);
    done.store(true, Ordering::Relaxed);
    let sent = producer.join().unwrap();
    assert!(sent >= 100_000);

    let selector = format!(r#"{{__name__="swap",test="{name}"}}"#);
    wait_for_distinct(&vm_a(), &selector, sent, Duration::from_secs(120), || {
        boulder.log()
    });
    let series = export(&vm_a(), &selector);
    let mut per_version = BTreeMap::new();
    let mut timestamps = HashSet::new();
    for s in &series {
        let version = s.labels.get("version").cloned().unwrap_or_default();
        *per_version.entry(version).or_insert(0) += s.samples.len();
        for (t, _) in &s.samples {
            assert!(timestamps.insert(*t), "a point under two versions at {t}");
        }
    }
    assert_eq!(timestamps.len(), sent);
    let versions: Vec<&str> = per_version.keys().map(String::as_str).collect();
    assert_eq!(
        versions,
        ["swap-version-1", "swap-version-2", "swap-version-3"],
        "{per_version:?}"
    );
    assert!(boulder
        .log()
        .contains("a changed component cannot be loaded"));
    assert_eq!(
        boulder.metric(r#"boulder_component_load_failures_total{tenant="ops"}"#),
        Some(1.0)
    );
    assert!(boulder.stop().success());
}

/// The router's component is swapped like a tenant's: here for one that routes
/// nowhere (`keep-all` names no tenant), so that points after the swap are
/// dead-lettered at `route` while those before it were written.
#[test]
fn the_routers_component_is_swapped_live_too() {
    let (name, dir) = start("reroute", 1);
    let router = dir.join("router.wasm");
    let route = std::fs::read(components().join("route.wasm")).unwrap();
    let keep_all = std::fs::read(components().join("keep-all.wasm")).unwrap();
    ship(&router, &route);
    let boulder = Boulder::run(
        &name,
        &influx_config(
            &name,
            &format!(
                r#"
                [router]
                component = {router:?}
                params = {{ rules = [{{ tag = "tenant" }}] }}

                [[tenants]]
                name = "ops"
                outputs = [{{ url = "{vm}/api/v2/write", batch_age = "100ms" }}]
                "#,
                router = router.display().to_string(),
                vm = vm_a(),
            ),
        ),
    );
    let start_ns = (now_ms() - 60_000) * 1_000_000;
    let point = |v: i64| {
        let line = format!("reroute,tenant=ops,test={name} v={v} {}\n", start_ns + v);
        produce(&name, &[("k", line.into_bytes())]);
    };
    let wait_router = |wasm: &[u8]| wait_running(&boulder, "", wasm);
    wait_router(&route);
    point(1);
    let selector = format!(r#"{{__name__="reroute",test="{name}"}}"#);
    wait_for_samples(&vm_a(), &selector, 1, Duration::from_secs(60), || {
        boulder.log()
    });

    ship(&router, &keep_all);
    wait_router(&keep_all);
    point(2);
    let dead = consume_all(&format!("{name}-dlq"), 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1, "{}", boulder.log());
    assert_eq!(headers(&dead[0])["__connect.errors.stage"], "route");
    assert!(boulder.stop().success());
    assert_eq!(export(&vm_a(), &selector)[0].samples.len(), 1);
}
