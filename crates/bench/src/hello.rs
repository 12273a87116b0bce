//! The hello-world limit: a tonic server whose one unary RPC does no work
//! (`grpc.health.v1.Health/Check` answering `SERVING`), on `127.0.0.1:0`. Its throughput
//! under a load is what the gRPC stack alone allows on this machine, so every service's
//! figure under the same load is reported as a ratio to it.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

/// A running hello-world server; stopped when dropped.
#[derive(Debug)]
pub struct Hello {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Hello {
    /// Starts the server on a free port of `127.0.0.1`.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let (stop, stopped) = oneshot::channel::<()>();
        // Like the suite's server: replies go out at once, without Nagle's delay.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL, for `tonic::transport::Endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Hello {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// One hello-world call on `channel`: the unit of work the limit is measured in.
pub async fn call(channel: tonic::transport::Channel) -> Result<(), tonic::Status> {
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .map(|_| ())
}
