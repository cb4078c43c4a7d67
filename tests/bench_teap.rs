//! `ragw bench teap` against `ragw dev`: a handful of new pledges, two at a time, run the full
//! TEAP provisioning conversation through the RADIUS front and all get a certificate; the JSON
//! report carries the load figures and the handshake-only comparison. No timing thresholds:
//! the figures depend on the machine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{Dev, ragw_bin};
use serde_json::Value;

#[test]
fn bench_teap_provisions_six_pledges_against_ragw_dev() {
    let dev = Dev::start(&[]);
    let out = Command::new(ragw_bin())
        .args(["bench", "teap", "--data-dir"])
        .arg(&dev.dir)
        .args([
            "--count",
            "6",
            "--concurrency",
            "2",
            "--format",
            "json",
            "--warmup",
            "1",
            // Enough to exercise the comparison without slowing the suite.
            "--handshake-iterations",
            "10",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ragw bench teap failed: {stderr}\n{stdout}"
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["target"], format!("radius://{}", dev.endpoint("radius")));
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["concurrency"], 2);
    assert_eq!(run["succeeded"], 6, "{run}");
    assert_eq!(run["failed"], 0, "{run}");
    assert!(run["errors"].as_object().unwrap().is_empty(), "{run}");
    assert!(run["conversations_per_second"].as_f64().unwrap() > 0.0);
    let latency = &run["latency_ms"];
    for q in ["p50", "p90", "p99", "max"] {
        assert!(latency[q].as_f64().unwrap() > 0.0, "{latency}");
    }
    assert!(latency["p50"].as_f64() <= latency["max"].as_f64());
    // Identity, Start/ClientHello, the server's flights, password, CSR, Crypto-Binding: a
    // provisioning conversation cannot take fewer than five Access-Requests.
    assert!(
        run["radius_round_trips_per_conversation"].as_f64().unwrap() >= 5.0,
        "{run}"
    );
    assert_eq!(v["warmup"], 1);
    let handshakes = &v["handshakes"];
    assert_eq!(handshakes["provider"], "aws-lc-rs");
    assert_eq!(handshakes["iterations"], 10);
    assert!(handshakes["handshakes_per_second"].as_f64().unwrap() > 0.0);
    assert!(run["ratio_to_handshakes"].as_f64().unwrap() > 0.0);
    // The gateway's own count agrees: a certificate for the warm-up pledge and the six.
    let (_, metrics) = common::http_get(&dev.endpoint("metrics"));
    assert_eq!(
        common::metric(&metrics, "ragw_teap_provisioning_total{outcome=\"issued\"}"),
        7.0,
        "{metrics}"
    );
    // Each of them is timed, Identity to Access-Accept.
    assert_eq!(
        common::metric(
            &metrics,
            "ragw_teap_conversation_seconds_count{outcome=\"accepted\"}"
        ),
        7.0,
        "{metrics}"
    );
}
