//! One write to an InfluxDB-v2-compatible endpoint: the request, gzip, the deadline,
//! and what the answer means.

use super::gzip::Gzip;
use crate::config::OutputConfig;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// The process's HTTP client: keep-alive connections, http and https (system CAs).
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds the shared client.
pub fn client() -> std::io::Result<HttpClient> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https))
}

/// What a write attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Written,
    /// 413: the batch is too large for the sink; split it.
    TooLarge,
    /// A connection error, a timeout, 429 or 5xx: try again, after `retry_after`
    /// when the sink said so.
    Retry {
        /// Why, for logs and the final dead letter.
        reason: String,
        /// The status, when there was one.
        status: Option<u16>,
        /// The sink's `Retry-After`, in seconds.
        retry_after: Option<Duration>,
    },
    /// A status of the output's `hold_on`: the output is misconfigured (its token,
    /// say); try again until that changes.
    Held {
        /// The status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// Any other status: the sink will never take this batch.
    Refused {
        /// The status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
}

/// The fixed parts of one output's requests.
pub struct Endpoint {
    uri: Uri,
    token: Option<HeaderValue>,
    gzip: Option<Gzip>,
    timeout: Duration,
    hold_on: Vec<u16>,
}

/// How much of an error response body is kept.
const BODY_EXCERPT: usize = 1024;

impl Endpoint {
    /// The endpoint of an output; `token` is the value of its `token_env`.
    pub fn new(output: &OutputConfig, token: Option<&str>) -> Result<Endpoint, String> {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("org", &output.org)
            .append_pair("bucket", &output.bucket)
            .append_pair("precision", "ns")
            .finish();
        let joint = if output.url.contains('?') { '&' } else { '?' };
        let uri: Uri = format!("{}{joint}{query}", output.url)
            .parse()
            .map_err(|e| format!("{}: {e}", output.url))?;
        let token =
            match token {
                Some(t) => Some(HeaderValue::from_str(&format!("Token {t}")).map_err(|_| {
                    "the token contains characters not allowed in a header".to_owned()
                })?),
                None => None,
            };
        Ok(Endpoint {
            uri,
            token,
            gzip: output.gzip.then(|| Gzip::level(output.gzip_level)),
            timeout: output.timeout,
            hold_on: output.hold_on.clone(),
        })
    }

    /// The request body for these lines: gzipped when configured.
    pub fn body(&self, lines: &[u8]) -> Bytes {
        match self.gzip {
            None => Bytes::copy_from_slice(lines),
            Some(gzip) => Bytes::from(gzip.compress(lines)),
        }
    }

    /// Sends one request with this body, within the output's timeout.
    pub async fn send(&self, client: &HttpClient, body: Bytes) -> Outcome {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8");
        if self.gzip.is_some() {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, token.clone());
        }
        let request = request.body(Full::new(body)).expect("a valid request");
        let exchange = async {
            let response = client.request(request).await.map_err(|e| {
                let mut reason = format!("connection error: {e}");
                if let Some(source) = std::error::Error::source(&e) {
                    reason = format!("{reason}: {source}");
                }
                reason
            })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| format!("reading the response: {e}"))?;
            Ok::<_, String>((parts, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Outcome::Retry {
                reason: format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                ),
                status: None,
                retry_after: None,
            },
            Ok(Err(reason)) => Outcome::Retry {
                reason,
                status: None,
                retry_after: None,
            },
            Ok(Ok((parts, body))) => classify(
                parts.status,
                parts.headers.get(RETRY_AFTER),
                &body,
                &self.hold_on,
            ),
        }
    }
}

fn classify(
    status: StatusCode,
    retry_after: Option<&HeaderValue>,
    body: &[u8],
    hold_on: &[u16],
) -> Outcome {
    if status.is_success() {
        return Outcome::Written;
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return Outcome::TooLarge;
    }
    let excerpt = || {
        let end = body.len().min(BODY_EXCERPT);
        String::from_utf8_lossy(&body[..end]).trim().to_owned()
    };
    if hold_on.contains(&status.as_u16()) {
        return Outcome::Held {
            status: status.as_u16(),
            body: excerpt(),
        };
    }
    let retried = [StatusCode::REQUEST_TIMEOUT, StatusCode::TOO_MANY_REQUESTS];
    if retried.contains(&status) || status.is_server_error() {
        return Outcome::Retry {
            reason: format!("{status}: {}", excerpt()),
            status: Some(status.as_u16()),
            retry_after: retry_after
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        };
    }
    Outcome::Refused {
        status: status.as_u16(),
        body: excerpt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        assert_eq!(
            classify(StatusCode::NO_CONTENT, None, b"", &[]),
            Outcome::Written
        );
        assert_eq!(
            classify(StatusCode::PAYLOAD_TOO_LARGE, None, b"", &[]),
            Outcome::TooLarge
        );
        let ra = HeaderValue::from_static("7");
        match classify(StatusCode::TOO_MANY_REQUESTS, Some(&ra), b"slow down", &[]) {
            Outcome::Retry {
                status,
                retry_after,
                reason,
            } => {
                assert_eq!(status, Some(429));
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
                assert!(reason.contains("slow down"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, None, b"", &[]),
            Outcome::Retry { .. }
        ));
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, None, b" bad line 3 \n", &[401]),
            Outcome::Refused {
                status: 400,
                body: "bad line 3".into()
            }
        );
        assert_eq!(
            classify(StatusCode::UNAUTHORIZED, None, b"bad token", &[401, 403]),
            Outcome::Held {
                status: 401,
                body: "bad token".into()
            }
        );
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, None, b"", &[]),
            Outcome::Refused { status: 401, .. }
        ));
        assert!(matches!(
            classify(StatusCode::REQUEST_TIMEOUT, None, b"", &[]),
            Outcome::Retry { .. }
        ));
    }

    #[test]
    fn gzips_bodies_and_builds_the_query() {
        let output: OutputConfig = toml::from_str(
            "url = \"http://127.0.0.1:8428/api/v2/write\"\norg = \"my org\"\nbucket = \"b&c\"",
        )
        .unwrap();
        let e = Endpoint::new(&output, Some("s3cret")).unwrap();
        assert_eq!(
            e.uri.to_string(),
            "http://127.0.0.1:8428/api/v2/write?org=my+org&bucket=b%26c&precision=ns"
        );
        assert_eq!(e.token.as_ref().unwrap(), "Token s3cret");
        let labelled: OutputConfig =
            toml::from_str("url = \"http://h:1/api/v2/write?extra_label=env%3Dprod\"").unwrap();
        assert_eq!(
            Endpoint::new(&labelled, None).unwrap().uri.to_string(),
            "http://h:1/api/v2/write?extra_label=env%3Dprod&org=&bucket=&precision=ns"
        );
        let body = e.body(b"m f=1 1\n");
        let mut d = flate2::read::GzDecoder::new(&body[..]);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut d, &mut out).unwrap();
        assert_eq!(out, "m f=1 1\n");
    }
}
