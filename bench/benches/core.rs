//! Micro-benchmarks of nethergate-core's per-connection work.
//!
//! - `route/*`: handshake parse + hostname split and normalise + route lookup in a table of 50 servers
//!   (100 exact names, 50 wildcards), for an exact name, a decorated one (Forge marker, upper case, trailing
//!   dot), a wildcard match and an unknown host (which tries every wildcard).
//! - `session/to_forward`: the session state machine from the first byte (handshake + login start in one
//!   chunk) to `Action::Forward`, with plugins allowing and the first dial succeeding.
//!
//! `cargo bench -p nethergate-bench --bench core`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use nethergate_bench::fixtures;
use std::sync::Arc;

fn route(c: &mut Criterion) {
    let table = fixtures::route_table();
    let mut group = c.benchmark_group("route");
    for (label, address, expected) in fixtures::CASES {
        let frame = fixtures::handshake_frame(address);
        assert_eq!(
            fixtures::route_connection(&table, &frame).map(|s| s.name()),
            expected
        );
        group.bench_function(label, |b| {
            b.iter(|| fixtures::route_connection(&table, black_box(&frame)).is_some())
        });
    }
    group.finish();
}

fn session(c: &mut Criterion) {
    let ctx = fixtures::context(Arc::new(fixtures::route_table()));
    let bytes = fixtures::login_bytes("node42.example.com");
    assert!(fixtures::session_to_forward(&ctx, &bytes).is_some());
    c.bench_function("session/to_forward", |b| {
        b.iter(|| fixtures::session_to_forward(&ctx, black_box(&bytes)))
    });
}

criterion_group!(benches, route, session);
criterion_main!(benches);
