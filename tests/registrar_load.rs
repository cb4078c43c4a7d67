//! 2 000 enrollments through the gRPC API from 8 concurrent callers, each submitted twice:
//! exactly one enrollment per idempotency key, on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::{Dev, Pg, csr_for, mac};
use ragw_proto::registrar::v1 as pb;
use ragw_proto::registrar::v1::enrollment_service_client::EnrollmentServiceClient;
use ragw_runtime::identity::Role;

const CALLERS: u32 = 8;
const PER_CALLER: u32 = 250;

async fn submit_twice(dev: &Dev) -> HashMap<u32, String> {
    let channel = dev.channel(Role::Gateway).await;
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let mut client = EnrollmentServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for i in caller * PER_CALLER..(caller + 1) * PER_CALLER {
                let a = client
                    .get_assignment(pb::GetAssignmentRequest {
                        device: Some(mac(i)),
                        profile: "iot".into(),
                        current_certificate_der: Vec::new(),
                    })
                    .await
                    .expect("assignment")
                    .into_inner();
                let (_, csr) = csr_for(&a.names);
                let r = client
                    .enroll(common::enroll_req(mac(i), csr.clone()))
                    .await
                    .expect("enroll")
                    .into_inner();
                assert!(!r.existing, "first submission of device {i} must be new");
                made.push((i, csr, r.enrollment.expect("enrollment").id));
            }
            made
        }));
    }
    let mut firsts = Vec::new();
    for t in tasks {
        firsts.extend(t.await.unwrap());
    }
    // Every key again, each from a different caller than the first time, all at once.
    let mut chunks: Vec<Vec<(u32, Vec<u8>, String)>> = vec![Vec::new(); CALLERS as usize];
    for (n, item) in firsts.into_iter().enumerate() {
        chunks[(n + 3) % CALLERS as usize].push(item);
    }
    let mut tasks = Vec::new();
    for chunk in chunks {
        let mut client = EnrollmentServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for (i, csr, first_id) in chunk {
                let r = client
                    .enroll(common::enroll_req(mac(i), csr))
                    .await
                    .expect("re-enroll")
                    .into_inner();
                assert!(
                    r.existing,
                    "second submission of device {i} must find the first"
                );
                let id = r.enrollment.expect("enrollment").id;
                assert_eq!(id, first_id, "same key, same enrollment");
                ids.push((i, id));
            }
            ids
        }));
    }
    let mut by_device = HashMap::new();
    for t in tasks {
        for (i, id) in t.await.unwrap() {
            assert!(by_device.insert(i, id).is_none());
        }
    }
    assert_eq!(by_device.len(), (CALLERS * PER_CALLER) as usize);
    by_device
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_enrollments_one_per_key_sqlite() {
    let dev = Dev::start(&["--no-worker"]);
    submit_twice(&dev).await;
    let db = rusqlite::Connection::open(dev.dir.join("ragw.db")).unwrap();
    let (rows, keys): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT device_id || '/' || csr_sha256) FROM enrollments",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, keys), (2000, 2000));
    let (code, out, err) = dev.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_enrollments_one_per_key_postgres() {
    let Some(pg) = Pg::fresh() else { return };
    let config = pg.config.to_string_lossy().into_owned();
    let dev = Dev::start(&["--no-worker", "--config", &config]);
    submit_twice(&dev).await;
    let client = pg.client().await;
    let row = client
        .query_one(
            "SELECT COUNT(*), COUNT(DISTINCT (device_id, csr_sha256)) FROM enrollments",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (2000, 2000));
    let (code, out, err) = dev.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    drop(dev);
    pg.drop_schema().await;
}
