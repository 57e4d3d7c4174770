//! turmoil's simulated TCP under tonic: the connections a simulated node accepts
//! ([`listen`]) and the [`connector`] nodes and clients dial with. Every byte between
//! simulated hosts goes through turmoil, so partitions, holds and latency apply to gRPC.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use journaldb::cluster::Connector;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// An accepted simulated connection, as tonic's server wants it.
#[derive(Debug)]
pub struct SimConnection(turmoil::net::TcpStream);

impl Connected for SimConnection {
    type ConnectInfo = ();

    fn connect_info(&self) {}
}

impl AsyncRead for SimConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The connections accepted on `port` of the current simulated host, for
/// [`journaldb_node::ClusterNode::start_with`], and the address they arrive at.
/// Must be called inside a simulated host.
pub async fn listen(
    port: u16,
) -> io::Result<(ReceiverStream<io::Result<SimConnection>>, SocketAddr)> {
    let bind = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let listener = turmoil::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = listener.accept().await.map(|(s, _)| SimConnection(s));
            let failed = accepted.is_err();
            if tx.send(accepted).await.is_err() || failed {
                return;
            }
        }
    });
    Ok((ReceiverStream::new(rx), addr))
}

/// Dials `host:port` over the simulated network.
pub fn connector() -> Connector {
    Connector::new(|authority: String| async move {
        turmoil::net::TcpStream::connect(authority.as_str()).await
    })
}
