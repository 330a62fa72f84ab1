// The long path's producer takes a `LongJob` (the typed queue message), not a bare job or any
// other value.
use proxy_fetch::system::protocol::{FetchJob, LongQueue};

async fn send(queue: &LongQueue, job: &FetchJob) -> Result<(), String> {
    queue.send(job).await?;
    queue.send(&"a job as text").await
}

fn main() {}
