//! Host name resolution with an error of our own, so a failed lookup is
//! recognised by its type, not by another crate's wording.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiAddrs, GaiResolver, Name};
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

/// The system resolver (getaddrinfo on the blocking pool), failing with
/// [`DnsError`].
#[derive(Clone, Debug)]
pub(crate) struct Resolver(GaiResolver);

impl Resolver {
    pub(crate) fn new() -> Self {
        Resolver(GaiResolver::new())
    }
}

/// The TCP connector over [`Resolver`].
pub(crate) type Connector = HttpConnector<Resolver>;

/// A host name that could not be resolved.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve host {host}")]
pub(crate) struct DnsError {
    pub(crate) host: String,
    #[source]
    source: io::Error,
}

impl Service<Name> for Resolver {
    type Response = GaiAddrs;
    type Error = DnsError;
    type Future = Pin<Box<dyn Future<Output = Result<GaiAddrs, DnsError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DnsError>> {
        self.0.poll_ready(cx).map_err(|source| DnsError {
            host: String::new(),
            source,
        })
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_owned();
        let lookup = self.0.call(name);
        Box::pin(async move { lookup.await.map_err(|source| DnsError { host, source }) })
    }
}
