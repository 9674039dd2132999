//! The fault-injecting proxy (`tools/fault_proxy.py`) in front of an emulator.
//!
//! Clients built from [`FaultProxy::sdk_config`] send every call through the proxy, with the
//! registrar's own retry and time-out settings ([`ecs_target_registrar::aws::retry_config`] and
//! [`ecs_target_registrar::aws::timeout_config`]), so a test sees what the function would do.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

use aws_config::SdkConfig;
use serde_json::{Value, json};

use super::{Emulator, kill_and_wait, lock, loopback_http, new_log_path, read_first_line};

/// A running fault proxy on 127.0.0.1 that forwards to one emulator.
pub struct FaultProxy {
    /// The proxy's port on 127.0.0.1.
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    child: Mutex<Option<Child>>,
    stdin: Mutex<Option<ChildStdin>>,
}

/// What the proxy counted since its rules were last set.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Requests seen, by `service:Action` (`ecs:DescribeTasks`, `elbv2:RegisterTargets`).
    pub requests: BTreeMap<String, u64>,
    /// Faults injected, by `service:Action:fault`.
    pub faults: BTreeMap<String, u64>,
}

impl ProxyStats {
    /// Returns the requests seen for one `service:Action`.
    pub fn requests_of(&self, operation: &str) -> u64 {
        self.requests.get(operation).copied().unwrap_or(0)
    }

    /// Returns the faults injected into one `service:Action`, of every kind.
    pub fn faults_of(&self, operation: &str) -> u64 {
        let prefix = format!("{operation}:");
        self.faults
            .iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .map(|(_, count)| count)
            .sum()
    }

    /// Returns every fault injected.
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }
}

impl FaultProxy {
    /// Starts a proxy in front of `emulator`.
    ///
    /// # Panics
    ///
    /// When the venv's Python is missing or the proxy prints no JSON line in time.
    pub fn start(emulator: &Emulator) -> FaultProxy {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join(".venv/bin/python");
        let log_path = new_log_path().with_extension("proxy.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", log_path.display()));
        let mut child = Command::new(&python)
            .arg(root.join("tools/fault_proxy.py"))
            .args(["--upstream", &emulator.endpoint])
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", python.display()));
        let line = read_first_line(&mut child).unwrap_or_else(|problem| {
            kill_and_wait(&mut child);
            panic!("the fault proxy did not start: {problem}")
        });
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("invalid JSON line from the fault proxy {line:?}: {err}"));
        let port = ready["port"]
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .unwrap_or_else(|| panic!("fault proxy line {line:?} has no valid port"));
        FaultProxy {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            stdin: Mutex::new(child.stdin.take()),
            child: Mutex::new(Some(child)),
        }
    }

    /// Builds an SDK configuration like [`Emulator::sdk_config`] that sends every call through
    /// the proxy, with the registrar's retry and time-out settings.
    pub fn sdk_config(&self, emulator: &Emulator) -> SdkConfig {
        emulator
            .sdk_config()
            .to_builder()
            .endpoint_url(&self.endpoint)
            .retry_config(ecs_target_registrar::aws::retry_config())
            .timeout_config(ecs_target_registrar::aws::timeout_config())
            .build()
    }

    /// Replaces the fault rules (see `tools/fault_proxy.py`) and zeroes the counters.
    ///
    /// # Panics
    ///
    /// When the proxy rejects the rules.
    pub fn set_rules(&self, seed: u64, rules: Value) {
        let body = json!({"seed": seed, "rules": rules}).to_string();
        let (status, answer) = loopback_http(self.port, "POST", "/fault-proxy/rules", &body);
        assert_eq!(status, 200, "the fault proxy rejected {body}: {answer}");
    }

    /// Returns what the proxy counted since the rules were last set.
    pub fn stats(&self) -> ProxyStats {
        let (status, answer) = loopback_http(self.port, "GET", "/fault-proxy/stats", "");
        assert_eq!(status, 200, "fault proxy stats failed: {answer}");
        let document: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|err| panic!("invalid fault proxy stats {answer:?}: {err}"));
        let counts = |key: &str| -> BTreeMap<String, u64> {
            document[key]
                .as_object()
                .map(|object| {
                    object
                        .iter()
                        .map(|(name, count)| (name.clone(), count.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default()
        };
        ProxyStats {
            requests: counts("requests"),
            faults: counts("faults"),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        drop(lock(&self.stdin).take());
        if let Some(mut child) = lock(&self.child).take() {
            kill_and_wait(&mut child);
        }
    }
}
