//! Hostile guests, built from tests/guests/: each is contained with its named error
//! while another tenant's batches keep flowing through the same runtime.

use boulder::runtime::{Chain, Failure, LoadError, StageError};
use boulder_tests::{config, cpu_batch, runtime, to_lines};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Runs the `evil` tenant's chain (one hostile stage) on several batches while a
/// thread pushes batches through the `good` tenant's built-in chain, and returns
/// the evil tenant's errors. Asserts that every good batch came through whole.
fn contain(hostile: &str, limits: &str) -> Vec<StageError> {
    let config = config(&format!(
        r#"
        [[tenants]]
        name = "good"
        chain = [{{ component = "validate" }}, {{ component = "normalize" }}, {{ component = "flip-single-fields" }}]

        [[tenants]]
        name = "evil"
        chain = [{{ component = "normalize" }}, {{ component = "{hostile}" }}]
        limits = {limits}
        "#
    ));
    let runtime = runtime(&config);
    let good = Chain::load(&runtime, &config, &config.tenants[0]).unwrap();
    let evil = Chain::load(&runtime, &config, &config.tenants[1]).unwrap();

    let stop = AtomicBool::new(false);
    let good_batches = std::thread::scope(|s| {
        let flowing = s.spawn(|| {
            let input = cpu_batch(100);
            let mut batches = 0;
            // At least a few batches, and on until the hostile tenant is done.
            while batches < 3 || !stop.load(Ordering::Relaxed) {
                let out = good.run(&input).expect("the good tenant is never affected");
                assert_eq!(out.batch.len(), 100);
                assert_eq!(to_lines(&out.batch)[7], "cpu,host=h7 usage=7.0,idle=93.0 7");
                batches += 1;
            }
            batches
        });
        let errors = (0..3)
            .map(|_| {
                evil.run(&cpu_batch(10))
                    .expect_err("the hostile stage must fail")
            })
            .collect::<Vec<_>>();
        stop.store(true, Ordering::Relaxed);
        (errors, flowing.join().unwrap())
    });
    let (errors, good_count) = good_batches;
    assert!(good_count >= 3);
    for e in &errors {
        assert_eq!(e.stage.tenant.as_deref(), Some("evil"));
        assert_eq!(e.stage.position, 2);
        assert_eq!(e.stage.component, hostile);
    }
    // The same failure each time: a fresh instance replaces the failed one.
    assert!(errors
        .windows(2)
        .all(|w| w[0].failure.code() == w[1].failure.code()));
    errors
}

#[test]
fn an_infinite_loop_hits_its_deadline() {
    // Long enough that the stage before the loop never hits it on a busy machine.
    let errors = contain("loop-forever", r#"{ deadline_per_call = "1s" }"#);
    assert_eq!(errors[0].failure, Failure::Deadline(Duration::from_secs(1)));
    assert_eq!(
        errors[0].to_string(),
        "tenant 'evil' stage 2 (loop-forever): guest ran past its deadline of 1s per call \
         (limits.deadline_per_call, wall-clock time)"
    );
}

#[test]
fn an_allocation_bomb_hits_the_memory_cap() {
    let errors = contain("alloc-bomb", r#"{ memory = "16MiB" }"#);
    assert!(
        matches!(errors[0].failure, Failure::OutOfMemory(m) if m.as_u64() == 16 << 20),
        "{:?}",
        errors[0].failure
    );
    assert!(
        errors[0]
            .to_string()
            .contains("ran out of memory (limit 16.0 MiB)"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_panic_is_reported_with_its_message() {
    let errors = contain("panic", "{}");
    match &errors[0].failure {
        Failure::Panic(message) => {
            assert!(message.contains("boom on measurement cpu"), "{message}")
        }
        other => panic!("expected a panic, got {other:?}"),
    }
}

#[test]
fn an_output_far_larger_than_the_input_is_refused() {
    let errors = contain("huge-output", "{}");
    match &errors[0].failure {
        Failure::OutputTooLarge {
            output,
            input,
            ratio,
        } => {
            assert_eq!(*ratio, 8);
            assert!(*output > 8 * input, "{output} vs {input}");
        }
        other => panic!("expected output-too-large, got {other:?}"),
    }
}

fn load_error(component: &str) -> LoadError {
    let config = config(&format!(
        "[[tenants]]\nname = \"evil\"\nchain = [{{ component = \"{component}\" }}]\n"
    ));
    let runtime = runtime(&config);
    Chain::load(&runtime, &config, &config.tenants[0])
        .err()
        .expect("must be refused")
}

#[test]
fn a_component_that_imports_wasi_is_refused_at_load() {
    let err = load_error("wasi-import");
    assert!(matches!(err, LoadError::ForbiddenImports { .. }), "{err}");
    let message = err.to_string();
    // cargo component may resolve the WASI package to a later 0.2.x.
    assert!(
        message.contains("imports wasi:random/random@0.2."),
        "{message}"
    );
    assert!(
        message.contains("may import only boulder:transform/log@0.1.0"),
        "{message}"
    );
}

#[test]
fn a_component_for_another_contract_version_is_refused_at_load() {
    let err = load_error("wrong-version");
    assert_eq!(
        err.to_string(),
        "component 'wrong-version' was built for boulder:transform@0.2.0; this Boulder runs boulder:transform@0.1.0"
    );
}

#[test]
fn a_file_that_is_not_a_component_is_refused_at_load() {
    let dir = boulder_tests::root().join("target/test-not-a-component");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("junk.wasm");
    std::fs::write(&path, b"\0asm not really").unwrap();
    let err = load_error(&path.display().to_string());
    assert!(matches!(err, LoadError::Invalid { .. }), "{err}");
}

#[test]
fn many_threads_share_a_stage_safely() {
    let config = config(
        r#"
        [[tenants]]
        name = "good"
        chain = [{ component = "validate" }, { component = "normalize" }, { component = "flip-single-fields" }]
        "#,
    );
    let runtime = runtime(&config);
    let chain = Arc::new(Chain::load(&runtime, &config, &config.tenants[0]).unwrap());
    std::thread::scope(|s| {
        for _ in 0..4 {
            let chain = chain.clone();
            s.spawn(move || {
                for n in [1, 50, 500] {
                    assert_eq!(chain.run(&cpu_batch(n)).unwrap().batch.len(), n);
                }
            });
        }
    });
}

/// Runs a chain of built-ins around the `malformed` guest in `mode` at `position`
/// and returns the error.
fn malformed_in_chain(mode: &str, position: usize) -> StageError {
    let mut stages = vec![
        r#"{ component = "normalize" }"#.to_owned(),
        r#"{ component = "flip-single-fields" }"#.to_owned(),
    ];
    stages.insert(
        position - 1,
        format!(r#"{{ component = "malformed", params = {{ mode = "{mode}" }} }}"#),
    );
    let config = config(&format!(
        "[[tenants]]\nname = \"evil\"\nchain = [{}]\n",
        stages.join(", ")
    ));
    let runtime = runtime(&config);
    let chain = Chain::load(&runtime, &config, &config.tenants[0]).unwrap();
    chain
        .run(&cpu_batch(10))
        .expect_err("a malformed answer fails the batch")
}

#[test]
fn a_malformed_answer_is_blamed_on_the_stage_that_gave_it() {
    for position in 1..=3 {
        for (mode, says) in [
            // Mid-chain the next guest refuses it; at the end the host does.
            ("garbage", "not a boulder:transform@0.1.0 batch"),
            ("lose-point", "input point 9 was neither kept nor rejected"),
            ("foreign-origin", "output point 0 has origin 1000000"),
        ] {
            let e = malformed_in_chain(mode, position);
            assert_eq!(e.stage.component, "malformed", "{mode} at {position}: {e}");
            assert_eq!(e.stage.position, position, "{mode}: {e}");
            assert!(
                matches!(&e.failure, Failure::MalformedOutput(m) if m.contains(says)),
                "{mode} at {position}: {e}"
            );
        }
    }
}
