//! The CLI's health poller against every case of `statemachine/health-cases.json`, the table
//! the state machine is tested against too. A scripted load balancer stands in for ELBv2 and
//! tokio's paused clock makes the waits instant.

use std::sync::Mutex;

use ecs_target_registrar::aws::{ApiError, LoadBalancing};
use ecs_target_registrar::decision::Target;
use ecs_target_registrar::health::{Observation, Timing, wait_healthy};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Cases {
    cases: Vec<Case>,
    errors: std::collections::HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    name: String,
    timing: Timing,
    #[serde(default)]
    target_group_missing: bool,
    health: Vec<Observation>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
struct Expect {
    outcome: String,
    rounds: u32,
    #[serde(default)]
    reason: Option<String>,
}

/// A load balancer whose one target reports the scripted health, one entry per call.
struct Scripted {
    health: Vec<Observation>,
    missing: bool,
    calls: Mutex<usize>,
}

impl LoadBalancing for Scripted {
    async fn register_targets(&self, _: &str, _: &[Target]) -> Result<(), ApiError> {
        Err(ApiError::service("Unexpected", "not scripted"))
    }

    async fn deregister_targets(&self, _: &str, _: &[Target]) -> Result<(), ApiError> {
        Err(ApiError::service("Unexpected", "not scripted"))
    }

    async fn describe_target_health(
        &self,
        _: &str,
        targets: &[Target],
    ) -> Result<Vec<(Target, Observation)>, ApiError> {
        let call = {
            let mut calls = self.calls.lock().expect("calls lock");
            *calls += 1;
            *calls
        };
        if self.missing {
            return Err(ApiError::service(
                "TargetGroupNotFound",
                "One or more target groups not found",
            ));
        }
        let index = (call - 1).min(self.health.len() - 1);
        Ok(targets
            .iter()
            .map(|target| (target.clone(), self.health[index].clone()))
            .collect())
    }

    async fn target_group_arn(&self, _: &str) -> Result<Option<String>, ApiError> {
        Ok(None)
    }
}

fn cases() -> Cases {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/statemachine/health-cases.json"
    );
    let text = std::fs::read_to_string(path).expect("read the health cases");
    serde_json::from_str(&text).expect("parse the health cases")
}

#[tokio::test(start_paused = true)]
async fn poller_agrees_with_every_case() {
    let cases = cases();
    assert!(cases.cases.len() >= 6, "the table lost cases");
    let target = Target {
        id: "10.0.1.5".into(),
        port: 8080,
    };

    for case in &cases.cases {
        let elb = Scripted {
            health: case.health.clone(),
            missing: case.target_group_missing,
            calls: Mutex::new(0),
        };
        let mut changes = 0;
        let result = wait_healthy(
            &elb,
            "arn:tg",
            std::slice::from_ref(&target),
            &case.timing,
            |_, _, _| changes += 1,
        )
        .await;
        let name = &case.name;

        if case.expect.outcome == "targetGroupNotFound" {
            let err = result.expect_err(name);
            assert!(err.is("TargetGroupNotFound"), "{name}: {err}");
            assert!(
                cases.errors["targetGroupNotFound"].starts_with("TargetGroupNotFound"),
                "{name}"
            );
            continue;
        }

        let results = result.unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(results.len(), 1, "{name}");
        let outcome = &results[0];
        assert_eq!(outcome.rounds, case.expect.rounds, "{name}: rounds");
        assert_eq!(
            *elb.calls.lock().expect("calls lock"),
            case.expect.rounds as usize,
            "{name}: calls"
        );
        assert!(changes >= 1, "{name}: no state was reported");
        match case.expect.outcome.as_str() {
            "healthy" => assert_eq!(outcome.failure, None, "{name}"),
            expected => {
                let failure = outcome
                    .failure
                    .unwrap_or_else(|| panic!("{name}: succeeded"));
                assert_eq!(failure.error_name(), cases.errors[expected], "{name}");
                assert_eq!(outcome.last.reason, case.expect.reason, "{name}: reason");
            }
        }
    }
}

#[test]
fn state_machine_timeout_matches_the_settings_check() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/statemachine/health-wait.asl.json"
    );
    let text = std::fs::read_to_string(path).expect("read the definition");
    let definition: serde_json::Value = serde_json::from_str(&text).expect("parse the definition");
    assert_eq!(
        definition["TimeoutSeconds"],
        ecs_target_registrar::health::STATE_MACHINE_TIMEOUT_SECONDS
    );
}
