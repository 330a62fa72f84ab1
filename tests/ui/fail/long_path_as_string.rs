// The long path is chosen with the `FetchPath` enum, never a string.
use proxy_fetch::ProxyFetchOptions;

fn main() {
    let _options = ProxyFetchOptions {
        path: "long",
        timeout_ms: 60_000,
        ..Default::default()
    };
}
