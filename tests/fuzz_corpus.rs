//! Regression run of the fuzz target: every file of the fuzz corpus (`fuzz/corpus/`) and every
//! crasher kept from fuzzing (`fuzz/regressions/`) goes through the same checks as under
//! libFuzzer (`fuzz/check.rs`), plus payloads too large for the fuzzer to reach.
//!
//! `make fuzz` runs the fuzzer itself; it needs a nightly toolchain and cargo-fuzz.

#[path = "../fuzz/check.rs"]
mod check;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Returns every file under `fuzz/FOLDER/`, sorted, or none when the folder does not exist.
fn files_under(folder: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(folder);
    let mut files = Vec::new();
    let mut pending = vec![root];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn replay(folder: &str) -> usize {
    let files = files_under(folder);
    for path in &files {
        let data = std::fs::read(path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
        // A panic names the file through this message's context.
        println!("replaying {}", path.display());
        check::check(&data);
    }
    files.len()
}

#[test]
fn corpus_inputs_pass_the_checks() {
    let count = replay("corpus");
    assert!(count > 0, "the fuzz corpus is empty");
}

#[test]
fn kept_crashers_pass_the_checks() {
    replay("regressions");
}

/// Returns a Fargate RUNNING event of the fuzz mapping's `web` service.
fn running_event() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/handle_payload/seed-web-running");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    serde_json::from_str(&text).expect("the seed is JSON")
}

/// Peak resident memory of this process (VmHWM), in KiB, where Linux reports it.
fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Size of each oversized payload, about the largest an asynchronous Lambda invocation takes
/// (256 KB) twenty times over.
const HUGE: usize = 5 * 1024 * 1024;

#[test]
fn huge_payloads_pass_with_bounded_memory() {
    let before = peak_memory_kib();
    let filler = "x".repeat(HUGE);

    let mut many_containers = running_event();
    let container = many_containers["detail"]["containers"][0].clone();
    let copies = HUGE / container.to_string().len().max(1);
    many_containers["detail"]["containers"] = Value::Array(vec![container; copies]);

    let mut other_containers = many_containers.clone();
    for container in other_containers["detail"]["containers"]
        .as_array_mut()
        .expect("containers is a list")
    {
        container["name"] = json!("sidecar");
    }

    let mut long_status = running_event();
    long_status["detail"]["lastStatus"] = json!(filler);

    let mut long_version = running_event();
    long_version["detail"]["version"] = json!(filler);

    let mut long_address = running_event();
    long_address["detail"]["attachments"][0]["details"] =
        json!([{"name": "privateIPv4Address", "value": filler}]);

    let long_action = json!({"action": "sweep", "services": [filler]});
    let mut long_type = running_event();
    long_type["detail-type"] = json!(filler);

    let deep = format!("{}{}", "[".repeat(HUGE / 2), "]".repeat(HUGE / 2));

    let payloads = [
        many_containers,
        other_containers,
        long_status,
        long_version,
        long_address,
        long_action,
        long_type,
    ];
    for payload in &payloads {
        let data = serde_json::to_vec(payload).expect("serialisable");
        assert!(
            data.len() >= HUGE,
            "payload of {} bytes is too small",
            data.len()
        );
        check::check(&data);
        if let Some(message) = check::error_message(&data) {
            assert!(
                message.len() <= 4096,
                "an error message of {} bytes repeats the payload: {}...",
                message.len(),
                &message[..200]
            );
        }
    }
    check::check(deep.as_bytes());

    // NOTE: other tests of this binary run at the same time, so the growth includes theirs
    // (188 MiB alone, 439 MiB beside the corpus replay, in a debug build). The bound catches
    // a quadratic blow-up, not a few extra copies of the payload.
    if let (Some(before), Some(after)) = (before, peak_memory_kib()) {
        let grown_mib = after.saturating_sub(before) / 1024;
        println!("peak memory grew by {grown_mib} MiB for 5 MiB payloads");
        assert!(grown_mib < 1024, "peak memory grew by {grown_mib} MiB");
    }
}
