//! Postfix's `smtpd`: the SMTP server session. (Interface placeholder; being written.)

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::postfix::PostfixConfig;

/// One master.cf `smtpd` service: its configuration (main.cf with the service's `-o`
/// overrides applied) and what its sessions share.
pub struct SmtpdService {
    pub name: String,
    pub cfg: PostfixConfig,
}

impl SmtpdService {
    /// `service_name` is master.cf's first column (`smtp`, `submission`, `127.0.0.1:2525`).
    pub fn new(cfg: PostfixConfig, service_name: &str) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(SmtpdService {
            name: service_name.to_string(),
            cfg,
        }))
    }

    /// Serve one accepted connection until the client quits or the session ends.
    pub async fn handle(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        _peer: SocketAddr,
        _local: SocketAddr,
    ) {
        drop(stream);
    }
}
