//! The HTTP driver: sends a request to the coordinator [`Plan`] names, turns what came
//! back into an [`Outcome`], sleeps what the plan says, and stops at the deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use xtsync_api::{ApiError, Redirect};
use xtsync_transport::{describe_tls_error, find_tls_error, ReloadingTls};

use crate::error::ClientError;
use crate::failover::{Next, Outcome, Plan};

/// Idle time before a keepalive probe, and between probes: the kernel's minimum.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(1);

/// The last failed attempts an error names: enough for a round of five coordinators.
const MISSES_KEPT: usize = 5;

/// Where the client's TLS configuration comes from.
#[derive(Clone)]
pub enum TlsSource {
    /// Fixed for the client's life (`xtsyncctl`).
    Fixed(Arc<rustls::ClientConfig>),
    /// Reloaded when the certificate files change (daemons): a new generation builds a
    /// new HTTP client, since reqwest takes its rustls configuration at build time.
    Reloading(ReloadingTls),
}

impl TlsSource {
    fn current(&self) -> (u64, Arc<rustls::ClientConfig>) {
        match self {
            TlsSource::Fixed(c) => (0, c.clone()),
            TlsSource::Reloading(r) => {
                let current = r.current();
                (current.generation, current.coordinator_client.clone())
            }
        }
    }
}

/// Timeouts of the client. The defaults suit coordinators on one LAN or a few sites.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// A TCP and TLS connection not made in this time counts as a dead coordinator.
    pub connect_timeout: Duration,
    /// How long one attempt may wait for its answer (a caller may give more, e.g. a
    /// long poll).
    pub request_timeout: Duration,
    /// How long a request keeps looking for a leader before it gives up.
    pub failover_deadline: Duration,
    /// A connection that has not heard from its coordinator for this long, while it
    /// waits for an answer or probes an idle link, is given up as dead.
    pub dead_link_after: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(30),
            failover_deadline: Duration::from_secs(30),
            dead_link_after: Duration::from_secs(2),
        }
    }
}

/// May the request be sent again after it was lost in flight?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads, and writes whose repetition changes nothing (heartbeats, reports,
    /// catalog commits of the same versions).
    Idempotent,
    /// Writes that would take effect twice (create a job or a run): sent again only
    /// when the coordinator surely did not apply them (no connection, not leader).
    Once,
}

/// A client of every coordinator of one cluster; clones share the leader it found.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// `host:port` of each coordinator; grows when a 421 names one not listed.
    addrs: Mutex<Vec<String>>,
    /// Index in `addrs` of the coordinator that last answered as leader.
    leader: AtomicUsize,
    tls: TlsSource,
    /// The HTTP client and the TLS generation it was built with.
    http: Mutex<(u64, reqwest::Client)>,
    options: ClientOptions,
}

/// One request, as the driver sends it (again).
pub struct Request<'a, B> {
    pub method: Method,
    pub path: &'a str,
    pub body: Option<&'a B>,
    pub retry: Retry,
    /// Overrides [`ClientOptions::request_timeout`] (long polls).
    pub timeout: Option<Duration>,
    /// Overrides [`ClientOptions::failover_deadline`] (a caller that must answer soon).
    pub deadline: Option<Duration>,
}

impl<'a> Request<'a, ()> {
    /// A read, with the client's timeouts.
    pub fn get(path: &'a str) -> Self {
        Request { method: Method::GET, path, body: None, retry: Retry::Idempotent, timeout: None, deadline: None }
    }
}

impl Client {
    /// `addrs` are `host:port` (an `https://` prefix is accepted); at least one.
    pub fn new(addrs: &[String], tls: TlsSource, options: ClientOptions) -> Result<Client, ClientError> {
        let addrs: Vec<String> = addrs.iter().map(|a| normalize(a)).collect();
        if addrs.is_empty() {
            return Err(ClientError::Setup("no coordinator address given".into()));
        }
        let (generation, config) = tls.current();
        let http = build_http(&config, &options)?;
        Ok(Client {
            inner: Arc::new(Inner {
                addrs: Mutex::new(addrs),
                leader: AtomicUsize::new(0),
                tls,
                http: Mutex::new((generation, http)),
                options,
            }),
        })
    }

    /// The coordinators this client knows, the last leader first.
    pub fn addrs(&self) -> Vec<String> {
        let mut addrs = self.inner.addrs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let leader = self.inner.leader.load(Ordering::Relaxed).min(addrs.len() - 1);
        addrs.swap(0, leader);
        addrs
    }

    fn http(&self) -> Result<reqwest::Client, ClientError> {
        let (generation, config) = self.inner.tls.current();
        let mut cached = self.inner.http.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 != generation {
            *cached = (generation, build_http(&config, &self.inner.options)?);
        }
        Ok(cached.1.clone())
    }

    fn addr_at(&self, index: usize) -> String {
        let addrs = self.inner.addrs.lock().unwrap_or_else(|p| p.into_inner());
        addrs[index.min(addrs.len() - 1)].clone()
    }

    pub async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        self.call(Request::<()>::get(path)).await
    }

    /// One GET at the coordinator at `addr` only: no redirect is followed (for a
    /// node's own view, e.g. `/v1/status?local=true`).
    pub async fn get_at<R: DeserializeOwned>(&self, addr: &str, path: &str) -> Result<R, ClientError> {
        let http = self.http()?;
        let addr = normalize(addr);
        match self.attempt(&http, &addr, &Request::<()>::get(path)).await {
            (_, Answer::Response(resp)) => finish(&addr, Answer::Response(resp)).await,
            (Outcome::NotLeader { .. } | Outcome::NoLeader, Answer::Failed(reason, _)) => {
                Err(ClientError::NoLeader(format!("{addr}: {reason}")))
            }
            (_, Answer::Failed(reason, tls)) => {
                Err(ClientError::Unreachable { reasons: format!("{addr}: {reason}"), tls })
            }
        }
    }

    pub async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        retry: Retry,
    ) -> Result<R, ClientError> {
        self.call(Request { method: Method::POST, path, body: Some(body), retry, timeout: None, deadline: None }).await
    }

    pub async fn delete<R: DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        // Deleting twice answers 404 the second time: safe to send again.
        let req = Request::<()> { method: Method::DELETE, ..Request::get(path) };
        self.call(req).await
    }

    /// Sends `req` to the leader, following redirects and skipping dead coordinators,
    /// until an answer or [`ClientOptions::failover_deadline`].
    pub async fn call<B: Serialize, R: DeserializeOwned>(&self, req: Request<'_, B>) -> Result<R, ClientError> {
        let http = self.http()?;
        let deadline = Instant::now() + req.deadline.unwrap_or(self.inner.options.failover_deadline);
        let mut plan = Plan::new(self.inner.leader.load(Ordering::Relaxed), req.retry == Retry::Idempotent);
        let mut misses: Vec<String> = Vec::new();
        loop {
            let index = plan.current();
            let addr = self.addr_at(index);
            let (outcome, answer) = self.attempt(&http, &addr, &req).await;
            if let Some(miss) = describe_miss(&addr, &outcome, &answer) {
                if misses.len() == MISSES_KEPT {
                    misses.remove(0);
                }
                misses.push(miss);
            }
            let next = {
                let mut addrs = self.inner.addrs.lock().unwrap_or_else(|p| p.into_inner());
                plan.after(outcome.clone(), &mut addrs)
            };
            match next {
                Next::Return => {
                    // Reads are served by the leader too (followers redirect them).
                    self.inner.leader.store(index, Ordering::Relaxed);
                    return finish(&addr, answer).await;
                }
                Next::OutcomeUnknown => {
                    let reason = match answer {
                        Answer::Failed(reason, _) => reason,
                        Answer::Response(r) => format!("HTTP {}", r.status()),
                    };
                    return Err(ClientError::OutcomeUnknown { addr, reason });
                }
                Next::Try { delay_ms, .. } => {
                    let wake = Instant::now() + Duration::from_millis(delay_ms);
                    if wake >= deadline {
                        return Err(give_up(outcome, misses, answer));
                    }
                    if delay_ms > 0 {
                        tokio::time::sleep_until(wake).await;
                    }
                }
            }
        }
    }

    async fn attempt<B: Serialize>(
        &self,
        http: &reqwest::Client,
        addr: &str,
        req: &Request<'_, B>,
    ) -> (Outcome, Answer) {
        let mut builder = http
            .request(req.method.clone(), format!("https://{addr}{}", req.path))
            .timeout(req.timeout.unwrap_or(self.inner.options.request_timeout));
        if let Some(body) = req.body {
            builder = builder.json(body);
        }
        let resp = match builder.send().await {
            Ok(resp) => resp,
            Err(e) => {
                let tls = find_tls_error(&e).is_some();
                let reason = describe_tls_error(&e);
                let outcome = if e.is_connect() { Outcome::Unreachable } else { Outcome::Lost };
                return (outcome, Answer::Failed(reason, tls));
            }
        };
        let status = resp.status().as_u16();
        if status != 421 && status != 503 && status < 500 {
            return (Outcome::Answered, Answer::Response(resp));
        }
        // The body says whether the request was applied; read it here (it is small).
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => return (Outcome::Lost, Answer::Failed(format!("HTTP {status}, body lost: {e}"), false)),
        };
        let parsed = serde_json::from_str::<ApiError>(&text).ok();
        let message = parsed.as_ref().map(|e| e.error.clone()).unwrap_or(text);
        let outcome = match parsed.and_then(|e| e.redirect) {
            Some(Redirect::NotLeader { leader_addr, .. }) => {
                Outcome::NotLeader { leader_addr: normalize(&leader_addr) }
            }
            Some(Redirect::NoLeader) => Outcome::NoLeader,
            // A 5xx without a redirect: the coordinator failed while handling it.
            None => Outcome::Lost,
        };
        (outcome, Answer::Failed(format!("HTTP {status}: {message}"), false))
    }
}

/// What came back from one attempt.
enum Answer {
    Response(reqwest::Response),
    /// No usable response: the reason, and whether TLS failed.
    Failed(String, bool),
}

fn describe_miss(addr: &str, outcome: &Outcome, answer: &Answer) -> Option<String> {
    match (outcome, answer) {
        (Outcome::Answered, _) => None,
        (_, Answer::Failed(reason, _)) => Some(format!("{addr}: {reason}")),
        (_, Answer::Response(r)) => Some(format!("{addr}: HTTP {}", r.status())),
    }
}

fn give_up(last: Outcome, misses: Vec<String>, answer: Answer) -> ClientError {
    let tls = matches!(answer, Answer::Failed(_, true));
    let reasons = misses.into_iter().rev().collect::<Vec<_>>().join("; ");
    match last {
        Outcome::NoLeader | Outcome::NotLeader { .. } => ClientError::NoLeader(reasons),
        _ => ClientError::Unreachable { reasons, tls },
    }
}

async fn finish<R: DeserializeOwned>(addr: &str, answer: Answer) -> Result<R, ClientError> {
    let resp = match answer {
        Answer::Response(resp) => resp,
        // A plan returns only after an answer.
        Answer::Failed(reason, tls) => return Err(ClientError::Unreachable { reasons: reason, tls }),
    };
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| ClientError::OutcomeUnknown {
        addr: addr.into(),
        reason: format!("HTTP {status}, body lost: {e}"),
    })?;
    if !(200..300).contains(&status) {
        let message = serde_json::from_str::<ApiError>(&text).map(|e| e.error).unwrap_or(text);
        return Err(ClientError::Status { addr: addr.into(), status, message });
    }
    let text = if text.is_empty() { "null" } else { &text };
    serde_json::from_str(text).map_err(|e| ClientError::Decode { addr: addr.into(), status, reason: e.to_string() })
}

fn normalize(addr: &str) -> String {
    addr.trim().trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/').to_string()
}

fn build_http(tls: &rustls::ClientConfig, options: &ClientOptions) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .connect_timeout(options.connect_timeout)
        // A coordinator whose link went down must not hold a request (a long poll
        // above all) until its timeout: keepalive probes run on idle connections, and
        // a connection whose data or probes go unacknowledged this long is dropped
        // (instead of the kernel's ~15 minutes of retransmissions).
        // (The kernel counts keepalive times in whole seconds.)
        .tcp_keepalive(KEEPALIVE_IDLE)
        .tcp_keepalive_interval(KEEPALIVE_IDLE)
        .tcp_keepalive_retries(3)
        .tcp_user_timeout(options.dead_link_after)
        .build()
        .map_err(|e| ClientError::Setup(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(normalize("https://h:7400/"), "h:7400");
        assert_eq!(normalize(" 10.0.0.1:7400"), "10.0.0.1:7400");
    }
}
