//! MQTT. For now only what readiness needs: is the broker reachable and does it speak MQTT?
//! The session supervisor, POS intake and stock publishing build on this module.

use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// MQTT 5 CONNECT with clean start, no will, keep-alive 5 s, and an empty client id (the
/// broker assigns one), then DISCONNECT. Fixed bytes: the probe needs no session.
const CONNECT: [u8; 15] = [
    0x10, 13, // CONNECT, remaining length
    0x00, 0x04, b'M', b'Q', b'T', b'T', 5, // protocol name, version 5
    0x02, 0x00, 0x05, // flags: clean start; keep-alive 5 s
    0x00, // no properties
    0x00, 0x00, // empty client id
];
const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// Connects, expects a CONNACK with reason code 0 (success), and disconnects.
pub async fn probe_broker(host: &str, port: u16, timeout: Duration) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect((host, port))
            .await
            .context("connecting")?;
        stream
            .write_all(&CONNECT)
            .await
            .context("sending CONNECT")?;
        let mut head = [0u8; 4];
        stream
            .read_exact(&mut head)
            .await
            .context("reading CONNACK")?;
        if head[0] != 0x20 {
            bail!("expected CONNACK, got packet type {:#x}", head[0]);
        }
        if head[3] != 0 {
            bail!("broker refused the connection, reason code {:#x}", head[3]);
        }
        let _ = stream.write_all(&DISCONNECT).await;
        Ok(())
    })
    .await
    .context("timed out")?
}
