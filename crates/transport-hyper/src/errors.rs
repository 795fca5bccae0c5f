//! Turning hyper's errors into transport errors with a kind and a message
//! that names the host.

use std::error::Error as StdError;
use std::io;

use fileuploader_core::{TransportError, TransportErrorKind as Kind};

/// `host:port` of a URI, for messages.
pub(crate) fn host(uri: &http::Uri) -> String {
    let host = uri.host().unwrap_or("?");
    match uri.port_u16() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// Refuses URIs the transport cannot send to, before any connection.
pub(crate) fn check_uri(uri: &http::Uri) -> Result<(), TransportError> {
    match uri.scheme_str() {
        Some("http" | "https") => {}
        other => {
            return Err(TransportError::new(
                Kind::UnsupportedScheme,
                format!("unsupported URL scheme {:?} in {uri}", other.unwrap_or("")),
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(TransportError::new(
            Kind::InvalidUrl,
            format!("URL malformed: no host in {uri}"),
        ));
    }
    Ok(())
}

/// Classifies a hyper or hyper-util error by walking its causes. The
/// message says what happened and to which host; the error itself is kept as
/// the source, so its causes are not repeated in the message and can be
/// downcast.
/// What to do about a TLS failure, when its cause is a common one.
fn tls_hint(tls: &str, uri: &http::Uri) -> String {
    if tls.contains("InvalidContentType") || tls.contains("corrupt message") {
        return format!(
            "; {} does not speak TLS: is it a plain http server? try http:// in the URL",
            host(uri)
        );
    }
    if tls.contains("CaUsedAsEndEntity") {
        return "; the server presents a CA certificate as its own (as `openssl req -x509` makes by default): make a server certificate signed by that CA (with basicConstraints CA:FALSE and the host in subjectAltName), or --cacert that CA and serve a certificate it signed".into();
    }
    if tls.contains("UnknownIssuer") {
        return "; the certificate's issuer is not trusted: give its CA with --cacert".into();
    }
    if tls.contains("NotValidForName") {
        return "; the certificate does not name this host: use the name it was made for, or make one with this host in subjectAltName".into();
    }
    String::new()
}

pub(crate) fn classify<E>(error: E, uri: &http::Uri) -> TransportError
where
    E: StdError + Send + Sync + 'static,
{
    let host = host(uri);
    let mut kind = Kind::Other;
    let mut detail = None;
    let mut cause: Option<&(dyn StdError + 'static)> = Some(&error);
    while let Some(e) = cause {
        if let Some(proxy) = e.downcast_ref::<crate::proxy::ProxyError>() {
            kind = Kind::Proxy;
            detail = Some(format!("cannot use proxy {} for {host}", proxy.proxy));
            break;
        }
        if let Some(tls) = rustls_error(e) {
            kind = Kind::Tls;
            detail = Some(format!(
                "TLS with {host} failed: {tls}{}",
                tls_hint(&tls.to_string(), uri)
            ));
            break;
        }
        if let Some(dns) = e.downcast_ref::<crate::dns::DnsError>() {
            kind = Kind::Dns;
            detail = Some(format!("cannot resolve host {}", dns.host));
            break;
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            let (k, what) = match io.kind() {
                io::ErrorKind::ConnectionRefused => (Kind::Connect, "connection refused"),
                io::ErrorKind::TimedOut => (Kind::Timeout, "connect timeout"),
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => (Kind::Reset, "connection reset"),
                _ => (Kind::Connect, "cannot connect"),
            };
            kind = k;
            detail = Some(match k {
                Kind::Timeout => {
                    format!("connect timeout: {host} did not accept a connection in time")
                }
                Kind::Reset => format!("connection to {host} was reset or closed"),
                _ => format!("connect to {host}: {what}"),
            });
            break;
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse() && uri.scheme_str() == Some("http") {
                detail = Some(format!(
                    "{host} did not answer in HTTP: is it an https server? try https:// in the URL ({h})"
                ));
                break;
            }
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                kind = Kind::Reset;
                detail = Some(format!("connection to {host} closed before the response"));
            } else if !h.is_user() && !h.is_parse() {
                // The connection failed under the request (an HTTP/2
                // connection error, a ping unanswered): another may not.
                kind = Kind::Reset;
                let why = h
                    .source()
                    .map_or_else(|| h.to_string(), ToString::to_string);
                detail = Some(format!("connection to {host} failed: {why}"));
            }
        }
        cause = e.source();
    }
    let message = detail.unwrap_or_else(|| format!("request to {host} failed"));
    TransportError::new(kind, message).with_source(error)
}

/// The rustls error behind `e`, looking inside `io::Error`s too: their
/// `source()` skips the error they wrap.
fn rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = e.downcast_ref::<io::Error>()?.get_ref()?;
    rustls_error(inner)
}
