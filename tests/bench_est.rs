//! `ragw bench est` against `ragw dev`: ten pledges, two at a time, all get a certificate, and
//! the JSON report carries the load figures and the crypto-only ceiling. No timing thresholds:
//! the figures depend on the machine.

mod common;

use std::process::Command;

use common::{Dev, ragw_bin};
use serde_json::Value;

#[test]
fn bench_est_enrolls_ten_pledges_against_ragw_dev() {
    let dev = Dev::start(&[]);
    let out = Command::new(ragw_bin())
        .args(["bench", "est", "--data-dir"])
        .arg(&dev.dir)
        .args([
            "--count",
            "10",
            "--concurrency",
            "2",
            "--format",
            "json",
            "--warmup",
            "2",
            // Enough to exercise the ceiling measurement without slowing the suite.
            "--crypto-iterations",
            "20",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ragw bench est failed: {stderr}\n{stdout}"
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["concurrency"], 2);
    assert_eq!(run["succeeded"], 10, "{run}");
    assert_eq!(run["failed"], 0, "{run}");
    assert!(run["errors"].as_object().unwrap().is_empty(), "{run}");
    assert!(run["enrollments_per_second"].as_f64().unwrap() > 0.0);
    let latency = &run["latency_ms"];
    for q in ["p50", "p90", "p99", "max"] {
        assert!(latency[q].as_f64().unwrap() > 0.0, "{latency}");
    }
    assert!(latency["p50"].as_f64() <= latency["max"].as_f64());
    // The worker's metrics were read, and it issued (at least) the ten certificates.
    assert!(
        run["acme"]["certificates"].as_f64().unwrap() >= 10.0,
        "{run}"
    );
    assert_eq!(v["warmup"], 2);
    let crypto = &v["crypto"];
    assert_eq!(crypto["provider"], "aws-lc-rs");
    assert_eq!(crypto["iterations"], 20);
    assert!(crypto["bundles_per_second_per_core"].as_f64().unwrap() > 0.0);
    assert!(run["ratio_to_ceiling"].as_f64().unwrap() > 0.0);
}
