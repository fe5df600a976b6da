//! SIGHUP: the config read again and applied without leaving the consumer group,
//! or refused with `boulder check`'s error while the running config flows on.

use boulder_tests::services::*;
use boulder_tests::{boulder_bin, root};
use std::time::Duration;

fn output(vm: &str) -> String {
    format!(r#"[{{ url = "{vm}/api/v2/write", batch_age = "100ms" }}]"#)
}

/// A config routing by the tag `tenant` to each of `tenants` (name, output).
fn routed(name: &str, tenants: &[(&str, &str)]) -> String {
    let tenants: String = tenants
        .iter()
        .map(|(tenant, vm)| {
            format!(
                "[[tenants]]\nname = \"{tenant}\"\nchain = [{{ component = \"normalize\" }}]\noutputs = {}\n",
                output(vm)
            )
        })
        .collect();
    routed_by_tag(name, &tenants)
}

/// Produces one point for `tenant` with value `v`, `v` seconds after `start_ms`.
fn point(name: &str, start_ms: i64, tenant: &str, v: i64) {
    let line = format!(
        "reload,tenant={tenant},test={name} v={v} {}\n",
        (start_ms + v * 1000) * 1_000_000
    );
    produce(name, &[("k", line.into_bytes())]);
}

fn wait_reloads(boulder: &Boulder, result: &str, n: f64) {
    boulder.wait_metric(
        &format!(r#"boulder_config_reloads_total{{result="{result}"}}"#),
        n,
        Duration::from_secs(30),
    );
}

/// A tenant added by SIGHUP gets its points; a tenant removed by SIGHUP no
/// longer does (its points are dead-lettered at `route`, as for any unknown
/// tenant); the process never leaves the group.
#[test]
fn tenants_added_and_removed_by_sighup_without_leaving_the_group() {
    require_services();
    let name = unique("reload");
    create_topic(&name, 2);
    let start_ms = now_ms() - 60_000;
    let boulder = Boulder::run(&name, &routed(&name, &[("a", &vm_a())]));
    let selector = format!(r#"{{__name__="reload",test="{name}"}}"#);
    let values = |vm: &str, n: usize| {
        let series = wait_for_samples(vm, &selector, n, Duration::from_secs(60), || boulder.log());
        let mut values: Vec<f64> = series
            .iter()
            .flat_map(|s| s.samples.iter().map(|&(_, v)| v))
            .collect();
        values.sort_by(f64::total_cmp);
        values
    };
    point(&name, start_ms, "a", 1);
    assert_eq!(values(&vm_a(), 1), [1.0]);

    boulder.reload(&routed(&name, &[("a", &vm_a()), ("b", &vm_b())]));
    wait_reloads(&boulder, "applied", 1.0);
    point(&name, start_ms, "b", 2);
    point(&name, start_ms, "a", 3);
    assert_eq!(values(&vm_b(), 1), [2.0]);
    assert_eq!(values(&vm_a(), 2), [1.0, 3.0]);

    boulder.reload(&routed(&name, &[("b", &vm_b())]));
    wait_reloads(&boulder, "applied", 2.0);
    point(&name, start_ms, "a", 4);
    point(&name, start_ms, "b", 5);
    assert_eq!(values(&vm_b(), 2), [2.0, 5.0]);
    let dead = consume_all(&format!("{name}-dlq"), 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1, "{}", boulder.log());
    let h = headers(&dead[0]);
    assert_eq!(h["__connect.errors.stage"], "route", "{h:?}");
    assert_eq!(
        values(&vm_a(), 2),
        [1.0, 3.0],
        "nothing more for the removed tenant"
    );

    let log = boulder.log();
    assert_eq!(log.matches("partitions assigned").count(), 1, "{log}");
    assert!(log.contains(r#"config reloaded added=["b"]"#), "{log}");
    assert!(log.contains(r#"removed=["a"]"#), "{log}");
    assert!(boulder.stop().success());
}

/// A config that `boulder check` refuses is refused on SIGHUP with the same
/// error, as is a change that needs a restart; the running config flows on.
#[test]
fn a_refused_config_keeps_the_running_one_flowing() {
    require_services();
    let name = unique("refused");
    create_topic(&name, 1);
    let start_ms = now_ms() - 60_000;
    let good = routed(&name, &[("a", &vm_a())]);
    let boulder = Boulder::run(&name, &good);

    let broken = good.replace("name = \"a\"", "name = \"a\"\ncolour = \"red\"");
    let broken_file = root()
        .join("target/test-run")
        .join(format!("{name}-broken.toml"));
    std::fs::write(&broken_file, &broken).unwrap();
    let check = std::process::Command::new(boulder_bin())
        .args(["check", "--config", broken_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!check.status.success());
    // The same error, the file's name aside.
    let unnamed = |text: &str, file: &std::path::Path| text.replace(file.to_str().unwrap(), "FILE");
    let refusal = String::from_utf8(check.stderr).unwrap();
    let refusal = unnamed(
        refusal.trim_start_matches("boulder: ").trim_end(),
        &broken_file,
    );
    assert!(refusal.contains("unknown field `colour`"), "{refusal}");
    boulder.reload(&broken);
    wait_reloads(&boulder, "refused", 1.0);
    let log = unnamed(&boulder.log(), &boulder.config);
    assert!(
        log.contains(&format!(
            "config reload refused; the running config is kept error={refusal}"
        )),
        "the log does not hold {refusal:?}:\n{log}"
    );

    let other_group = good.replace(
        &format!("group_id = \"{name}\""),
        &format!("group_id = \"{name}-2\""),
    );
    boulder.reload(&other_group);
    wait_reloads(&boulder, "refused", 2.0);
    assert!(
        boulder
            .log()
            .contains("[kafka] changed: that needs a restart of boulder run, not a reload"),
        "{}",
        boulder.log()
    );

    point(&name, start_ms, "a", 1);
    let selector = format!(r#"{{__name__="reload",test="{name}"}}"#);
    wait_for_samples(&vm_a(), &selector, 1, Duration::from_secs(60), || {
        boulder.log()
    });
    assert_eq!(
        boulder.metric(r#"boulder_config_reloads_total{result="applied"}"#),
        None
    );
    assert!(boulder.stop().success());
}

/// An output removed by SIGHUP while its sink is down keeps its writer until the
/// points it holds are written: the new output gets the points after the reload,
/// the old one the points before it, once its sink is back; nothing is lost or
/// dead-lettered.
#[test]
fn a_removed_outputs_points_in_flight_are_written_first() {
    use boulder_tests::stub_sink::StubSink;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    require_services();
    let name = unique("unplugged");
    create_topic(&name, 1);
    let start_ms = now_ms() - 60_000;
    let recovered = Arc::new(AtomicBool::new(false));
    let old = StubSink::down_until(recovered.clone());
    let config = |url: &str| {
        routed_by_tag(
            &name,
            &format!(
                "[[tenants]]\nname = \"a\"\noutputs = [{{ url = \"{url}/api/v2/write\", batch_age = \"50ms\" }}]\n"
            ),
        )
    };
    let boulder = Boulder::run(&name, &config(&old.url));
    point(&name, start_ms, "a", 1);
    boulder_tests::wait_until(
        "a write attempt",
        Duration::from_secs(30),
        || boulder.log(),
        || !old.received().is_empty(),
    );

    boulder.reload(&config(&vm_a()));
    wait_reloads(&boulder, "applied", 1.0);
    point(&name, start_ms, "a", 2);
    let selector = format!(r#"{{__name__="reload",test="{name}"}}"#);
    let series = wait_for_samples(&vm_a(), &selector, 1, Duration::from_secs(60), || {
        boulder.log()
    });
    assert_eq!(
        series[0].samples[0].1, 2.0,
        "only the point after the reload"
    );

    recovered.store(true, Ordering::Relaxed);
    boulder_tests::wait_until(
        "the old output's write",
        Duration::from_secs(60),
        || boulder.log(),
        || old.written_lines().len() == 1,
    );
    let written = old.written_lines();
    assert!(written.iter().all(|l| l.contains(" v=1.0 ")), "{written:?}");
    assert!(boulder.stop().success());
    assert!(consume_all(&format!("{name}-dlq"), 1, Duration::from_secs(3)).is_empty());
}
