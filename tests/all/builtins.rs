//! The built-in transforms, through the real runtime, as components.

use boulder::runtime::{Chain, LoadError, Routed, Router};
use boulder_tests::{config, lines, runtime, to_lines};

const BUILTIN_CHAIN: &str = r#"
[[tenants]]
name = "ops"
chain = [{ component = "validate" }, { component = "normalize" }, { component = "flip-single-fields" }]
"#;

#[test]
fn the_three_stage_chain_makes_points_prometheus_compatible() {
    let config = config(BUILTIN_CHAIN);
    let runtime = runtime(&config);
    let chain = Chain::load(&runtime, &config, &config.tenants[0]).unwrap();
    let input = lines(
        "CPU,Host=a,__meta=x usage.user=1.5,Usage_System=2 10\n\
         Mem,host=b used_percent=60 20\n\
         9lives f=1 30\n\
         sensor,host=c reading=1,label=\"text\" 40\n\
         only,host=d note=\"just a string\" 50\n",
        "metrics",
    );
    let out = chain.run(&input).unwrap();
    assert_eq!(
        to_lines(&out.batch),
        vec![
            "cpu,host=a usage_user=1.5,usage_system=2.0 10",
            "mem_used_percent,host=b value=60.0 20",
            "sensor_reading,host=c value=1.0 40",
        ]
    );
    // Origins map kept points back to their input points.
    let origins: Vec<u32> = out.batch.points.iter().map(|p| p.origin).collect();
    assert_eq!(origins, vec![0, 1, 3]);
    let rejected: Vec<_> = out
        .rejected
        .iter()
        .map(|r| {
            (
                r.origin,
                r.dead_letter,
                r.stage.to_string(),
                r.reason.as_str(),
                r.line.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        vec![
            (
                2,
                false,
                "tenant 'ops' stage 1 (validate)".to_owned(),
                "measurement does not start with a letter",
                "9lives f=1.0 30"
            ),
            (
                4,
                false,
                "tenant 'ops' stage 1 (validate)".to_owned(),
                "no fields",
                "only,host=d note=\"just a string\" 50"
            ),
        ]
    );
}

#[test]
fn chain_order_matters() {
    // flip skips `cpu` only if normalize ran first and made `CPU` into `cpu`.
    let make = |first: &str, second: &str| {
        config(&format!(
            r#"[[tenants]]
            name = "t"
            chain = [{first}, {second}]"#
        ))
    };
    let flip = r#"{ component = "flip-single-fields", params = { except = ["cpu"] } }"#;
    let normalize = r#"{ component = "normalize" }"#;
    let input = lines("CPU usage=1 1", "m");
    let mut results = Vec::new();
    for config in [make(normalize, flip), make(flip, normalize)] {
        let runtime = runtime(&config);
        let chain = Chain::load(&runtime, &config, &config.tenants[0]).unwrap();
        results.push(to_lines(&chain.run(&input).unwrap().batch));
    }
    assert_eq!(
        results,
        vec![vec!["cpu usage=1.0 1"], vec!["cpu_usage value=1.0 1"]]
    );
}

#[test]
fn the_router_splits_by_topic_and_tag_and_dead_letters_unknown_tenants() {
    let config = config(
        r#"
        [router]
        component = "route"
        params = { rules = [{ topic = "^web-.*$", tenant = "web" }, { tag = "tenant" }], default = "ops" }
        [[tenants]]
        name = "ops"
        [[tenants]]
        name = "web"
        "#,
    );
    let runtime = runtime(&config);
    let router = Router::load(&runtime, &config).unwrap().unwrap();
    let input = lines(
        "a f=1 1\nb,tenant=web f=2 2\nc,tenant=nobody f=3 3\n",
        "metrics",
    );
    let out = router.route(&input).unwrap();
    assert_eq!(to_lines(&out.by_tenant["ops"].batch()), vec!["a f=1.0 1"]);
    assert_eq!(
        to_lines(&out.by_tenant["web"].batch()),
        vec!["b,tenant=web f=2.0 2"]
    );
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].origin, 2);
    assert_eq!(out.rejected[0].reason, "router assigned an unknown tenant");
    assert!(out.rejected[0].dead_letter);

    let from_web_topic = router.route(&lines("x f=1 1", "web-frontend")).unwrap();
    assert_eq!(
        from_web_topic.by_tenant.keys().collect::<Vec<_>>(),
        vec!["web"]
    );
}

/// The usual case, every point to one tenant, hands the router's answer to the
/// tenant's chain as it came: the chain must make of it exactly what it makes of
/// the same points decoded, and the points must decode with the caller's origins
/// (which the pipeline dead-letters by when the chain fails).
#[test]
fn a_batch_routed_whole_to_one_tenant_runs_as_if_decoded() {
    let config = config(&format!(
        r#"
        [router]
        component = "route"
        params = {{ rules = [{{ tag = "tenant" }}], default = "ops" }}
        {BUILTIN_CHAIN}
        "#
    ));
    let runtime = runtime(&config);
    let router = Router::load(&runtime, &config).unwrap().unwrap();
    let chain = Chain::load(&runtime, &config, &config.tenants[0]).unwrap();
    let mut input = lines(
        "CPU,host=a usage.user=1.5 10\n9lives f=1 20\nmem,tenant=ops used=2 30\n",
        "metrics",
    );
    // Origins as the pipeline's: message indices, not point indices.
    for (p, origin) in input.points.iter_mut().zip([7, 8, 9]) {
        p.origin = origin;
    }
    let mut out = router.route(&input).unwrap();
    assert!(out.rejected.is_empty());
    let routed = out.by_tenant.remove("ops").unwrap();
    assert!(out.by_tenant.is_empty());
    assert!(
        matches!(routed, Routed::Answer { .. }),
        "the answer is handed over as it came"
    );
    assert_eq!(routed.len(), 3);
    let decoded = routed.batch().into_owned();
    assert_eq!(
        decoded.points.iter().map(|p| p.origin).collect::<Vec<_>>(),
        vec![7, 8, 9]
    );
    assert!(decoded.iter().all(|p| p.tenant() == "ops"));

    let handed_over = chain.run_routed(&routed).unwrap();
    let from_decoded = chain.run(&decoded).unwrap();
    assert_eq!(handed_over.batch, from_decoded.batch);
    assert_eq!(handed_over.rejected, from_decoded.rejected);
    assert_eq!(
        to_lines(&handed_over.batch),
        vec![
            "cpu_usage_user,host=a value=1.5 10",
            "mem_used,tenant=ops value=2.0 30"
        ]
    );
    assert_eq!(
        handed_over
            .batch
            .points
            .iter()
            .map(|p| p.origin)
            .collect::<Vec<_>>(),
        vec![7, 9]
    );
    assert_eq!(handed_over.rejected.len(), 1);
    assert_eq!(handed_over.rejected[0].origin, 8);
}

#[test]
fn bad_params_are_refused_at_load_naming_the_stage() {
    let config = config(
        r#"
        [[tenants]]
        name = "ops"
        chain = [{ component = "normalize" }, { component = "validate", params = { strings = "explode" } }]
        "#,
    );
    let runtime = runtime(&config);
    let err = Chain::load(&runtime, &config, &config.tenants[0])
        .err()
        .unwrap();
    assert!(matches!(err, LoadError::Params { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with("tenant 'ops' stage 2 (validate): params refused: invalid params: unknown variant `explode`"),
        "{message}"
    );

    let config = boulder_tests::config(
        r#"
        [router]
        component = "route"
        params = { rules = [{ value = "x", tenant = "a" }] }
        "#,
    );
    let runtime = boulder_tests::runtime(&config);
    let message = Router::load(&runtime, &config).err().unwrap().to_string();
    assert!(
        message.contains("router (route): params refused: rules[0]"),
        "{message}"
    );
}

#[test]
fn an_unknown_component_names_where_it_looked() {
    let config = config(
        r#"
        [[tenants]]
        name = "ops"
        chain = [{ component = "validat" }]
        "#,
    );
    let runtime = runtime(&config);
    let message = Chain::load(&runtime, &config, &config.tenants[0])
        .err()
        .unwrap()
        .to_string();
    assert!(
        message.contains("component 'validat' is neither a built-in found in"),
        "{message}"
    );
    assert!(message.contains("target/components"), "{message}");
}
