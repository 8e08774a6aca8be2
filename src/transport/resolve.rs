//! The system resolver, with failures told apart as `dns` (docs/behaviour.md §5).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

/// A name that did not resolve; found again in the error chain to classify `dns`.
#[derive(Debug)]
pub struct DnsError {
    pub(super) host: String,
    pub(super) reason: String,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dns lookup of {:?} failed: {}", self.host, self.reason)
    }
}

impl StdError for DnsError {}

/// The system resolver, with failures marked as [`DnsError`]. (The connector does not ask it
/// about IP literals.)
#[derive(Clone, Copy, Debug)]
pub struct Resolver;

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = DnsError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DnsError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DnsError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let fail = |reason: String| DnsError {
                host: host.clone(),
                reason,
            };
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| fail(e.to_string()))?
                .collect();
            if addrs.is_empty() {
                return Err(fail("no addresses".into()));
            }
            Ok(addrs.into_iter())
        })
    }
}
