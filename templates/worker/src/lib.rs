use proxy_fetch::rpc::HandlerError;
use proxy_fetch::{entrypoint, origin, Continuation, FetchResult, ProxyFetchOptions, ProxyRequest};
use worker::*;

proxy_fetch::serve_system!(); // this worker serves the FetchOrchestrator and the FetchExecutor

#[origin]
pub struct Inbox { state: State, env: Env }

#[entrypoint(durable_object, origin)]
impl Inbox {
    pub async fn check(&self, city: String) -> std::result::Result<String, HandlerError> {
        let api = self.env.var("WEATHER_API")?.to_string();
        let request = ProxyRequest::get(format!("{api}/weather/{city}"));
        // InboxClient::ON_RESPONSE is generated: a handler that does not exist, or does not
        // take (FetchResult, String), does not compile.
        let continuation = Continuation::new(InboxClient::ON_RESPONSE, city);
        Ok(proxy_fetch::proxy_fetch(self, request, continuation, &ProxyFetchOptions::default()).await?)
    }

    /// Runs once per request with the response (any status) or a typed error (Network,
    /// Timeout, Cancelled, Rejected, Backstop); again only if the instance died while it ran
    /// (the result carries the request id, to tell). A continuation handler (first argument
    /// `FetchResult`) is called by proxy-fetch only, never over RPC.
    async fn on_response(&self, result: FetchResult, city: String) -> std::result::Result<(), HandlerError> {
        match result {
            Ok(response) => self.state.storage().put(&city, response.text().unwrap_or("")).await?,
            Err(error) => console_error!("{city}: {error}"),
        }
        Ok(())
    }

    pub async fn weather(&self, city: String) -> std::result::Result<Option<String>, HandlerError> {
        Ok(self.state.storage().get(&city).await?)
    }
}

// The rest is this template's own front door: POST /check/<city> starts a proxied fetch,
// GET /weather/<city> shows what the handler stored.
#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let url = req.url()?;
    let path: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
    let inbox = InboxClient::from_name(&env, "INBOX", "inbox")?;
    match (req.method(), path.as_slice()) {
        (Method::Post, ["check", city]) => Response::ok(inbox.check(city.to_string()).await?),
        (Method::Get, ["weather", city]) => match inbox.weather(city.to_string()).await? {
            Some(weather) => Response::ok(weather),
            None => Response::error("no result yet", 404),
        },
        _ => Response::error("try POST /check/<city>, then GET /weather/<city>", 404),
    }
}
