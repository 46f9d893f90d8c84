//! `lockkit exporter --listen ADDR`: Prometheus metrics, a status page and
//! a health check over HTTP.
//!
//! - `/metrics`: this process's own lockkit metrics (the `metrics` facade,
//!   rendered by `metrics-exporter-prometheus`), then metrics collected at
//!   every scrape from the backend's `list()`: active locks, per lock the
//!   seconds held and to expiry (labelled with its owner), locks per owner,
//!   locks within `--soon` of expiry, scrape errors. Per-lock series are
//!   capped (`--max-lock-series`): a flood of names cannot explode the
//!   server's cardinality; the locks left out are counted.
//! - `/`: the same view as an HTML page that refreshes itself; no
//!   front-end build.
//! - `/healthz`: `ok` while the exporter runs (the backend's health is in
//!   `lockkit_scrape_success`).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lockkit::{Error, LockBackend};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::format::{LockView, human};

/// What `lockkit exporter` was asked for.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Locks expiring within this long count as "expiring soon".
    pub soon: Duration,
    /// At most this many locks get per-lock series.
    pub max_lock_series: usize,
    /// How often the status page reloads itself.
    pub refresh: Duration,
}

struct State {
    backend: Arc<dyn LockBackend>,
    config: Config,
    own: PrometheusHandle,
    scrape_errors: AtomicU64,
}

/// Serves until interrupted (SIGINT or SIGTERM).
///
/// # Errors
/// A configuration error if the address cannot be bound or a metrics
/// recorder is already installed.
pub async fn serve(backend: Arc<dyn LockBackend>, config: Config) -> Result<u8, Error> {
    let own = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| Error::configuration(format!("cannot install the metrics recorder: {e}")))?;
    lockkit::metrics::describe_metrics();
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::configuration(format!("cannot listen on {}: {e}", config.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::configuration(format!("cannot listen on {}: {e}", config.listen)))?;
    // Tests and operators read the bound address (`--listen 127.0.0.1:0`).
    eprintln!("lockkit exporter listening on http://{local}");
    let state = Arc::new(State {
        backend,
        config,
        own,
        scrape_errors: AtomicU64::new(0),
    });
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::configuration(format!("cannot handle SIGTERM: {e}")))?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(respond(&state, &req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = tokio::signal::ctrl_c() => return Ok(0),
            _ = terminate.recv() => return Ok(0),
        }
    }
}

async fn respond(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_owned(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let mut text = state.own.render();
            text.push_str(&collect(state).await);
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            )
        }
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page(state).await,
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// The held locks, sorted by name, or the error reading them.
async fn locks(state: &State) -> Result<Vec<LockView>, Error> {
    let now = SystemTime::now();
    let held = state.backend.list().await?;
    Ok(crate::format::views(&held, now))
}

/// The metrics collected from the backend at this scrape.
async fn collect(state: &State) -> String {
    let mut out = String::new();
    let kind = state.backend.kind();
    let result = locks(state).await;
    if result.is_err() {
        state.scrape_errors.fetch_add(1, Ordering::Relaxed);
    }
    metric(
        &mut out,
        "lockkit_scrape_success",
        "gauge",
        "1 if the last read of the backend's locks worked",
    );
    let _ = writeln!(
        out,
        "lockkit_scrape_success{{backend=\"{kind}\"}} {}",
        u8::from(result.is_ok())
    );
    metric(
        &mut out,
        "lockkit_scrape_errors_total",
        "counter",
        "Failed reads of the backend's locks",
    );
    let _ = writeln!(
        out,
        "lockkit_scrape_errors_total{{backend=\"{kind}\"}} {}",
        state.scrape_errors.load(Ordering::Relaxed)
    );
    let Ok(locks) = result else {
        return out;
    };
    metric(
        &mut out,
        "lockkit_locks_active",
        "gauge",
        "Locks held now, as the backend lists them",
    );
    let _ = writeln!(
        out,
        "lockkit_locks_active{{backend=\"{kind}\"}} {}",
        locks.len()
    );

    let soon = state.config.soon;
    let expiring = locks.iter().filter(|l| l.expires_within(soon)).count();
    metric(
        &mut out,
        "lockkit_locks_expiring",
        "gauge",
        "Locks that expire within `within_seconds` unless renewed",
    );
    let _ = writeln!(
        out,
        "lockkit_locks_expiring{{backend=\"{kind}\",within_seconds=\"{}\"}} {expiring}",
        soon.as_secs_f64()
    );

    let mut owners: Vec<(&str, usize)> = Vec::new();
    for lock in &locks {
        match owners.iter_mut().find(|(o, _)| *o == lock.owner) {
            Some((_, n)) => *n += 1,
            None => owners.push((&lock.owner, 1)),
        }
    }
    owners.sort_unstable();
    metric(
        &mut out,
        "lockkit_locks_by_owner",
        "gauge",
        "Locks held now per owner",
    );
    for (owner, n) in owners.iter().take(state.config.max_lock_series) {
        let _ = writeln!(
            out,
            "lockkit_locks_by_owner{{backend=\"{kind}\",owner=\"{}\"}} {n}",
            escape(owner)
        );
    }

    let shown = &locks[..locks.len().min(state.config.max_lock_series)];
    metric(
        &mut out,
        "lockkit_lock_held_seconds",
        "gauge",
        "Seconds since each lock was granted",
    );
    for lock in shown {
        let _ = writeln!(
            out,
            "lockkit_lock_held_seconds{{backend=\"{kind}\",lock=\"{}\",owner=\"{}\"}} {:.3}",
            escape(&lock.name),
            escape(&lock.owner),
            lock.held_for_seconds
        );
    }
    metric(
        &mut out,
        "lockkit_lock_expires_in_seconds",
        "gauge",
        "Seconds until each lock expires unless renewed (leases with a TTL)",
    );
    for lock in shown {
        if let Some(secs) = lock.expires_in_seconds {
            let _ = writeln!(
                out,
                "lockkit_lock_expires_in_seconds{{backend=\"{kind}\",lock=\"{}\",owner=\"{}\"}} {secs:.3}",
                escape(&lock.name),
                escape(&lock.owner)
            );
        }
    }
    metric(
        &mut out,
        "lockkit_lock_series_dropped",
        "gauge",
        "Locks left out of the per-lock series by --max-lock-series",
    );
    let _ = writeln!(
        out,
        "lockkit_lock_series_dropped{{backend=\"{kind}\"}} {}",
        locks.len() - shown.len()
    );
    out
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Text for HTML.
fn html(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The status page.
async fn page(state: &State) -> String {
    let soon = state.config.soon;
    let mut body = String::new();
    match locks(state).await {
        Err(err) => {
            let _ = write!(
                body,
                "<p class=\"error\" id=\"error\">cannot read the locks: {}</p>",
                html(&err.to_string())
            );
        }
        Ok(locks) if locks.is_empty() => body.push_str("<p id=\"empty\">No locks are held.</p>"),
        Ok(locks) => {
            let expiring = locks.iter().filter(|l| l.expires_within(soon)).count();
            let _ = write!(
                body,
                "<p id=\"summary\">{} held, {expiring} expiring within {}.</p>\
                 <table id=\"locks\"><thead><tr><th>lock</th><th>owner</th><th>token</th><th>held for</th><th>expires in</th></tr></thead><tbody>",
                locks.len(),
                human(soon)
            );
            for lock in &locks {
                let class = if lock.expires_within(soon) {
                    " class=\"soon\""
                } else {
                    ""
                };
                let expires = lock.expires_in_seconds.map_or_else(
                    || "with its session".to_owned(),
                    |s| human(Duration::from_secs_f64(s)),
                );
                let _ = write!(
                    body,
                    "<tr{class}><td class=\"name\">{}</td><td class=\"owner\">{}</td><td class=\"token\">{}</td><td class=\"held\">{}</td><td class=\"expires\">{}</td></tr>",
                    html(&lock.name),
                    html(&lock.owner),
                    lock.token,
                    human(Duration::from_secs_f64(lock.held_for_seconds)),
                    html(&expires)
                );
            }
            body.push_str("</tbody></table>");
        }
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{}\"><title>lockkit: locks on {}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}}\
         tr.soon{{background:#fde2e1}}.error{{color:#b00}}</style></head>\
         <body><h1>Locks on {}</h1>{body}<p><small>Refreshes every {}. <a href=\"/metrics\">metrics</a></small></p></body></html>",
        state.config.refresh.as_secs().max(1),
        html(state.backend.kind()),
        html(state.backend.kind()),
        human(state.config.refresh)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_html_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(html("<b>&'\""), "&lt;b&gt;&amp;&#39;&quot;");
    }
}
