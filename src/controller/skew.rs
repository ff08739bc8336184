//! The host's clock against the API server's, at start: deadlines are
//! decided on this host's clock and written for others to read, so a host
//! that is minutes off acts minutes early or late.

use chrono::{DateTime, Utc};
use kube::Client;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// More than this apart, and the difference is logged as a warning.
const TOLERATED_SECONDS: f64 = 5.0;

/// Compares this host's clock with the `Date` the API server answers with
/// (to the second), records the difference in `tenure_clock_skew_seconds`
/// and warns when it is more than a few seconds. A failed comparison is
/// logged, never fatal.
pub async fn compare_with_api_server(client: &Client, metrics: &Metrics) {
    match measure(client).await {
        Ok(skew) => {
            metrics.set_clock_skew(skew);
            if skew.abs() > TOLERATED_SECONDS {
                warn!(
                    skew_seconds = skew,
                    "this host's clock differs from the API server's: deadlines are acted on this far off"
                );
            } else {
                info!(skew_seconds = skew, "clock agrees with the API server's");
            }
        }
        Err(error) => warn!(%error, "could not compare the clock with the API server's"),
    }
}

/// This host's time minus the API server's, from the midpoint of one request.
async fn measure(client: &Client) -> anyhow::Result<f64> {
    let request = hyper::Request::get("/version").body(kube::client::Body::from(Vec::new()))?;
    let sent = Utc::now();
    let response = client.send(request).await?;
    let received = Utc::now();
    let date = response
        .headers()
        .get(hyper::header::DATE)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| anyhow::anyhow!("the API server sent no Date header"))?;
    let server = DateTime::parse_from_rfc2822(date)?.with_timezone(&Utc);
    Ok(skew(sent, received, server))
}

/// The local midpoint of the request minus the server's time. The Date
/// header is truncated to the second: half a second is added back.
fn skew(sent: DateTime<Utc>, received: DateTime<Utc>, server: DateTime<Utc>) -> f64 {
    let midpoint = sent + (received - sent) / 2;
    (midpoint - server).as_seconds_f64() - 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skew_is_the_requests_midpoint_minus_the_servers_second() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let sent = at("2026-01-01T00:01:00.000Z");
        let received = at("2026-01-01T00:01:01.000Z");
        assert_eq!(skew(sent, received, at("2026-01-01T00:01:00Z")), 0.0);
        assert_eq!(skew(sent, received, at("2026-01-01T00:00:50Z")), 10.0);
    }
}
