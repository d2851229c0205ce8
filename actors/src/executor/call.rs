//! One call of a job's HTTP target, and the rules a target must follow to be
//! accepted at submit time.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Url};
use sundial_raft::job::HttpTarget;
use sundial_raft::Job;

/// Timeout of a call when the target sets none, ms.
pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 30_000;
/// Longest timeout a target may set, ms (1 h).
pub const MAX_CALL_TIMEOUT_MS: u64 = 3_600_000;
const MAX_URL_BYTES: usize = 2048;
const MAX_TARGET_HEADERS: usize = 64;
/// How much of a failed call's response body goes into the job's error.
pub const ERROR_EXCERPT_BYTES: usize = 512;
const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];
/// Headers the executor sets itself, or that would corrupt the request.
const RESERVED_HEADERS: [&str; 5] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
];

/// A target that breaks a rule: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTarget {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> BadTarget {
    BadTarget {
        field,
        message: message.into(),
    }
}

/// Checks a target as a client gave it and fills in defaults (method POST,
/// timeout 30 s).
pub fn check_target(
    url: &str,
    method: &str,
    headers: BTreeMap<String, String>,
    timeout_ms: u64,
) -> Result<HttpTarget, BadTarget> {
    if url.len() > MAX_URL_BYTES {
        return Err(bad(
            "http.url",
            format!("is {} bytes, at most {MAX_URL_BYTES}", url.len()),
        ));
    }
    let parsed = Url::parse(url).map_err(|e| bad("http.url", format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(
            "http.url",
            format!("scheme {:?} is not http or https", parsed.scheme()),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("http.url", format!("{url:?} has no host")));
    }
    let method = if method.is_empty() {
        "POST".to_string()
    } else {
        method.to_ascii_uppercase()
    };
    if !METHODS.contains(&method.as_str()) {
        return Err(bad(
            "http.method",
            format!("{method:?} is not one of {}", METHODS.join(", ")),
        ));
    }
    if headers.len() > MAX_TARGET_HEADERS {
        return Err(bad(
            "http.headers",
            format!("{} headers, at most {MAX_TARGET_HEADERS}", headers.len()),
        ));
    }
    for (name, value) in &headers {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad("http.headers", format!("{name:?} is not a header name")))?;
        if RESERVED_HEADERS.contains(&parsed.as_str()) || parsed.as_str().starts_with("sundial-") {
            return Err(bad(
                "http.headers",
                format!("{name:?} is set by the executor and cannot be given"),
            ));
        }
        HeaderValue::from_str(value).map_err(|_| {
            bad(
                "http.headers",
                format!("value of {name:?} is not a valid header value"),
            )
        })?;
    }
    let timeout_ms = match timeout_ms {
        0 => DEFAULT_CALL_TIMEOUT_MS,
        n if n > MAX_CALL_TIMEOUT_MS => {
            return Err(bad(
                "http.timeout_ms",
                format!("{n} ms is over the limit of {MAX_CALL_TIMEOUT_MS} ms (1 h)"),
            ))
        }
        n => n,
    };
    Ok(HttpTarget {
        url: parsed.to_string(),
        method,
        headers,
        timeout_ms,
    })
}

/// The HTTP client every executor of the node shares (one connection pool).
/// Redirects are not followed: a 3xx is not a success, so the job's author
/// sees it rather than a silently different endpoint.
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("sundial/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| describe(&e))
}

/// Calls `target` for attempt `token` of `job`: the payload is the body, and
/// the `sundial-*` headers name the job, its attempt, namespace and queue (an
/// endpoint can deduplicate on job id and attempt). A 2xx answer returns its
/// body (at most `max_result_bytes`); anything else is an error naming the
/// status, with the start of the body.
pub async fn call(
    client: &reqwest::Client,
    job: &Job,
    target: &HttpTarget,
    token: u32,
    max_result_bytes: usize,
) -> Result<Vec<u8>, String> {
    let method = Method::from_bytes(target.method.as_bytes())
        .map_err(|_| format!("stored method {:?} is not valid", target.method))?;
    let mut request = client
        .request(method, &target.url)
        .timeout(Duration::from_millis(target.timeout_ms));
    for (name, value) in &target.headers {
        request = request.header(name, value);
    }
    request = request
        .header("sundial-job-id", job.id.to_string())
        .header("sundial-attempt", token.to_string())
        .header("sundial-namespace", &job.namespace)
        .header("sundial-queue", &job.queue);
    if let Some(schedule) = &job.schedule_id {
        request = request.header("sundial-schedule-id", schedule);
    }
    if !job.payload.is_empty() {
        request = request.body(job.payload.clone());
    }
    let mut response = request.send().await.map_err(|e| describe(&e))?;
    let status = response.status();
    let cap = if status.is_success() {
        max_result_bytes
    } else {
        ERROR_EXCERPT_BYTES
    };
    let mut body = Vec::new();
    let mut body_error = None;
    while body.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(cap - body.len())]),
            Ok(None) => break,
            Err(e) => {
                body_error = Some(describe(&e));
                break;
            }
        }
    }
    if status.is_success() {
        // The endpoint answered 2xx: it did its work, even if the rest of
        // the body did not arrive.
        if let Some(e) = body_error {
            tracing::debug!(id = %job.id, error = %e, "response body cut short after a 2xx status");
        }
        return Ok(body);
    }
    // One line: runs of whitespace (newlines in an HTML page, say) become
    // one space.
    let excerpt = String::from_utf8_lossy(&body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    Err(if excerpt.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {excerpt}")
    })
}

/// An error with its causes, e.g. "error sending request: connection refused".
fn describe(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_filled_in() {
        let t = check_target("https://example.com/hook", "", BTreeMap::new(), 0).expect("valid");
        assert_eq!(t.method, "POST");
        assert_eq!(t.timeout_ms, DEFAULT_CALL_TIMEOUT_MS);
        assert_eq!(t.url, "https://example.com/hook");
        let t =
            check_target("http://127.0.0.1:8080/x", "put", headers(&[("x-token", "a")]), 5).expect("valid");
        assert_eq!(t.method, "PUT");
        assert_eq!(t.timeout_ms, 5);
    }

    #[test]
    fn bad_targets_name_their_field() {
        let field = |r: Result<HttpTarget, BadTarget>| r.expect_err("invalid").field;
        assert_eq!(field(check_target("", "", BTreeMap::new(), 0)), "http.url");
        assert_eq!(
            field(check_target("example.com/x", "", BTreeMap::new(), 0)),
            "http.url"
        );
        assert_eq!(
            field(check_target("ftp://example.com/x", "", BTreeMap::new(), 0)),
            "http.url"
        );
        assert_eq!(
            field(check_target("http://x/", "BREW", BTreeMap::new(), 0)),
            "http.method"
        );
        assert_eq!(
            field(check_target("http://x/", "", headers(&[("bad header", "v")]), 0)),
            "http.headers"
        );
        assert_eq!(
            field(check_target("http://x/", "", headers(&[("Host", "v")]), 0)),
            "http.headers"
        );
        assert_eq!(
            field(check_target(
                "http://x/",
                "",
                headers(&[("sundial-attempt", "9")]),
                0
            )),
            "http.headers"
        );
        assert_eq!(
            field(check_target("http://x/", "", headers(&[("x", "line\nbreak")]), 0)),
            "http.headers"
        );
        assert_eq!(
            field(check_target(
                "http://x/",
                "",
                BTreeMap::new(),
                MAX_CALL_TIMEOUT_MS + 1
            )),
            "http.timeout_ms"
        );
    }
}
