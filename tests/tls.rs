//! Punie behind a TLS-terminating proxy, set up as the README says: the
//! server stays on loopback and is told the proxy's name (`--allowed-host`);
//! Punie's own clients reach it on `wss://`, trusting the proxy's certificate
//! as the system's store (`SSL_CERT_FILE`) names it. The proxy here is a few
//! lines of tokio-rustls that forward bytes, as a real proxy passes `Host`
//! through unchanged.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use support::{Bridge, Home, Server};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A TLS proxy listening on `listener`, in front of `server`, with a
/// certificate for `localhost`; the certificate's PEM file, to trust.
fn tls_proxy(listener: TcpListener, server: SocketAddr, home: &Home) -> PathBuf {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("a self-signed certificate");
    let cert_file = home.dir.path().join("proxy.pem");
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions the provider supports")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("a TLS server configuration");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut client) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut upstream) = TcpStream::connect(server).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    cert_file
}

/// A server behind a TLS proxy that it knows by name: the server, and the
/// proxy's `wss://` URL and certificate file.
async fn server_behind_a_tls_proxy() -> (Server, String, PathBuf) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_name = format!("localhost:{}", listener.local_addr().unwrap().port());
    let server = Server::start_in(Home::new(), &["--allowed-host", &proxy_name]).await;
    let cert_file = tls_proxy(listener, server.address, &server.home);
    (server, format!("wss://{proxy_name}/acp"), cert_file)
}

/// The bridge to `url`, trusting only the certificates in `trusted`, and the
/// answer to the `initialize` it was sent.
async fn bridge_initialized(server: &Server, url: &str, trusted: &Path) -> (Bridge, Value) {
    let mut bridge = Bridge::spawn_with(&server.home, url, &server.token, |command| {
        command.env("SSL_CERT_FILE", trusted);
    });
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                     "params": {"protocolVersion": 1}}))
        .await;
    let answer = bridge.response_to(1).await;
    (bridge, answer)
}

#[tokio::test]
async fn the_bridge_reaches_a_server_behind_a_tls_proxy_on_wss() {
    let (server, url, cert_file) = server_behind_a_tls_proxy().await;
    let (mut bridge, answer) = bridge_initialized(&server, &url, &cert_file).await;
    assert_eq!(answer["result"]["protocolVersion"], 1, "{answer}");
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 2, "method": "session/new",
                     "params": {"cwd": server.home.workspace(), "mcpServers": []}}))
        .await;
    assert!(
        bridge.response_to(2).await["result"]["sessionId"].is_string(),
        "a session through the proxy"
    );
    bridge.close_stdin();
    assert!(bridge.exit_status().await.success());
}

#[tokio::test]
async fn a_certificate_the_client_does_not_trust_is_refused_with_a_clear_error() {
    let (server, url, _) = server_behind_a_tls_proxy().await;
    // The system's store does not know the proxy's certificate.
    let empty_store = server.home.dir.path().join("empty.pem");
    std::fs::write(&empty_store, "").unwrap();
    let (mut bridge, answer) = bridge_initialized(&server, &url, &empty_store).await;
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&url) && message.to_lowercase().contains("certificate"),
        "{answer}"
    );
    assert_eq!(bridge.exit_status().await.code(), Some(1));
}
