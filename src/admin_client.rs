//! Reaching the running server's admin API over its local Unix socket.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use writ_proto::admin::admin_client::AdminClient;

/// Where the admin socket is: `--admin-socket`, else `<data-dir>/admin.sock`.
#[derive(Args, Clone, Debug)]
pub struct AdminTarget {
    /// The server's data directory (its admin socket is `<data-dir>/admin.sock`).
    #[arg(long, env = "WRIT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The admin socket path, when moved with the server's --admin-socket.
    #[arg(long, env = "WRIT_ADMIN_SOCKET")]
    pub admin_socket: Option<PathBuf>,
}

impl AdminTarget {
    /// The socket: flags (and their environment variables) first, then cli.toml's
    /// `admin_socket` or `data_dir`, then the built-in data dir.
    pub fn socket(&self) -> anyhow::Result<PathBuf> {
        if let Some(s) = &self.admin_socket {
            return Ok(s.clone());
        }
        if let Some(d) = &self.data_dir {
            return Ok(d.join("admin.sock"));
        }
        let file = &crate::cli_defaults::get().values;
        if let Some(s) = &file.admin_socket {
            return Ok(s.clone());
        }
        let dir = match &file.data_dir {
            Some(d) => d.clone(),
            None => writ_server::default_data_dir()?,
        };
        Ok(dir.join("admin.sock"))
    }

    /// Connects to the admin API.
    pub async fn connect(&self) -> anyhow::Result<AdminClient<Channel>> {
        let path = self.socket()?;
        if !path.exists() {
            anyhow::bail!(
                "no admin socket at {}: is `writ server` running with this --data-dir (or pass --admin-socket)?",
                path.display()
            );
        }
        let p = path.clone();
        let channel = Endpoint::from_static("http://admin.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let p = p.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
                }
            }))
            .await
            .with_context(|| format!("connecting to the admin socket {}", path.display()))?;
        Ok(AdminClient::new(channel))
    }
}

/// A gRPC status as an error a user can act on.
pub fn status(s: tonic::Status) -> anyhow::Error {
    // A refused connection is closed unread; depending on timing the client reports that
    // as any of these.
    if matches!(
        s.code(),
        tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
    ) {
        anyhow::anyhow!(
            "the server refused or dropped the admin connection ({}); the admin socket only serves the server's own user and root",
            s.message()
        )
    } else {
        anyhow::anyhow!("{} ({:?})", s.message(), s.code())
    }
}
