//! Native micro-benchmark: encoding and decoding a `FetchJob` and a `FetchResult` with a 1 KiB
//! and a 1 MiB body (serde, the work every hop does besides the runtime's structured clone).
//! Prints one JSON line per case for bench/bench.mjs. `cargo bench -p proxy-fetch --bench codec`.

use proxy_fetch::system::{FetchJob, OriginRef};
use proxy_fetch::{FetchResult, ProxyFetchOptions, ProxyRequest, ProxyResponse};
use std::hint::black_box;
use std::time::Instant;

fn time<F: FnMut()>(name: &str, iterations: u32, mut f: F) {
    f();
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let micros = start.elapsed().as_secs_f64() * 1e6 / iterations as f64;
    println!("{{\"name\": \"{name}\", \"micros\": {micros:.2}}}");
}

fn main() {
    for (label, size, iterations) in [("1 KiB", 1024, 20_000), ("1 MiB", 1024 * 1024, 50)] {
        let job = FetchJob {
            id: "5f0c6a9e-2f0e-4c8a-9a53-0d6f2b3c1d4e".into(),
            request: ProxyRequest::post("https://api.example.com/v1/items", vec![42u8; size])
                .header("content-type", "application/octet-stream"),
            origin: OriginRef {
                binding: "INBOX".into(),
                id: "ab".repeat(32),
            },
            shard: "singleton".into(),
            options: ProxyFetchOptions::default(),
        };
        time(
            &format!("FetchJob {label} encode+decode"),
            iterations,
            || {
                let bytes = serde_json::to_vec(black_box(&job)).unwrap_or_default();
                black_box(serde_json::from_slice::<FetchJob>(&bytes).ok());
            },
        );
        let result: FetchResult = Ok(ProxyResponse {
            request_id: job.id.clone(),
            status: 200,
            status_text: "OK".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_bytes::ByteBuf::from(vec![7u8; size]),
            url: "https://api.example.com/v1/items".into(),
            attempts: 1,
            duration_ms: 12.0,
        });
        time(
            &format!("FetchResult {label} encode+decode"),
            iterations,
            || {
                let bytes = serde_json::to_vec(black_box(&result)).unwrap_or_default();
                black_box(serde_json::from_slice::<FetchResult>(&bytes).ok());
            },
        );
    }
}
