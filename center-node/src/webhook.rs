//! Calling an asynchronous task's webhook without becoming a proxy into the network r1-center runs in
//! (SSRF): a client chooses the URL, so by default only public addresses are called — an IP literal is
//! checked as written, a name is resolved and only its public addresses are used (so a name that
//! resolves to `127.0.0.1`, the metadata service or a pod IP is refused, whatever it resolved to earlier),
//! and redirects are not followed. `node.webhook_private_networks = true` lifts the address check for a
//! deployment whose receivers are internal.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

pub use r1_proto::net::is_public;

/// Why a webhook URL is not called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not an http(s) URL with a host.
    #[error("not an http(s) URL")]
    NotHttp,
    /// An address that is not public.
    #[error("`{0}` is not a public address")]
    Private(IpAddr),
}

/// The check a URL passes before it is called (its name's addresses are checked when resolved).
pub fn check(url: &str, private_networks: bool) -> Result<(), Refused> {
    let url = reqwest::Url::parse(url).map_err(|_| Refused::NotHttp)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused::NotHttp);
    }
    let host = url.host_str().ok_or(Refused::NotHttp)?;
    // An IP literal (IPv6 in brackets); anything else is a name, checked when resolved.
    let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() else {
        return Ok(());
    };
    if !private_networks && !is_public(ip) {
        return Err(Refused::Private(ip));
    }
    Ok(())
}

/// Resolves names to their public addresses only (none left: the call fails).
#[derive(Debug)]
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let refused = std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("`{host}` resolves to no public address"),
                );
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The client webhooks are called with: no redirects; with `private_networks` off, public addresses only.
pub fn client(private_networks: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    let builder = if private_networks {
        builder
    } else {
        builder.dns_resolver(Arc::new(PublicOnly))
    };
    builder.build().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_called_unless_private_networks_are_allowed() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://10.0.0.7/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/hook",
            "http://[fd00::1]/hook",
            "http://[::ffff:192.168.1.1]/hook",
            "http://100.64.0.1/hook",
            "http://0.0.0.0/hook",
        ] {
            assert!(matches!(check(url, false), Err(Refused::Private(_))), "{url}");
            assert_eq!(check(url, true), Ok(()), "{url} with private networks allowed");
        }
        for url in [
            "https://hooks.example.com/r1",
            "http://93.184.216.34/hook",
            "https://[2606:4700::1111]/",
        ] {
            assert_eq!(check(url, false), Ok(()), "{url}");
        }
        for url in ["ftp://example.com/", "file:///etc/passwd", "not a url"] {
            assert_eq!(check(url, false), Err(Refused::NotHttp), "{url}");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_not_called_and_redirects_are_not_followed() {
        // A receiver on loopback, reached by name: refused by the resolver, never contacted.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = client(false).post(format!("http://localhost:{port}/hook")).send().await;
        assert!(sent.is_err(), "{sent:?}");
        let accepted = tokio::time::timeout(std::time::Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "no connection was made");

        // Allowed, a redirect is answered as it is, not followed.
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(|| async { axum::response::Redirect::temporary("http://169.254.169.254/") }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let r = client(true)
            .post(format!("http://127.0.0.1:{port}/hook"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 307);
    }
}
