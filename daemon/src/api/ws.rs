//! The log WebSocket of OPEN-C3's task page: `GET /slave/:slave/ws?uuid=<task>`.
//! One text message per log record of the task, as an HTML fragment (escaped,
//! ANSI colours as spans) that the page appends followed by `<br/>`; a close
//! frame (1000) once the task has ended and every record was sent.
//!
//! RFC 6455 is spoken here directly over the upgraded connection: the server
//! only sends text frames and answers ping and close, so the handshake and
//! framing are a few dozen lines, against a WebSocket crate and its
//! dependency tree for the same.

use super::*;
use crate::model::Task;
use futures_lite::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt};
use std::time::Duration;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Client frames carry heartbeats ("H") and control frames; larger ones end the stream.
const MAX_CLIENT_FRAME: u64 = 64 * 1024;
/// Records sent per store read.
const PAGE: usize = 500;

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    jobx_plugin_api::base64::encode(&h.digest().bytes())
}

/// A server frame (never masked).
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= u16::MAX as usize => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// What the client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Text, binary or continuation data (the page's heartbeats): ignored.
    Data,
    Ping(Vec<u8>),
    Pong,
    Close,
}

/// Reads one client frame; errors end the connection.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Incoming> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await?;
    let opcode = head[0] & 0x0f;
    if head[1] & 0x80 == 0 {
        return Err(bad("client frames must be masked"));
    }
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).await?;
            u16::from_be_bytes(b) as u64
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).await?;
            u64::from_be_bytes(b)
        }
        n => n as u64,
    };
    if len > MAX_CLIENT_FRAME {
        return Err(bad("client frame too large"));
    }
    let mut mask = [0u8; 4];
    r.read_exact(&mut mask).await?;
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(match opcode {
        0x0..=0x2 => Incoming::Data,
        0x8 => Incoming::Close,
        0x9 => Incoming::Ping(payload),
        0xA => Incoming::Pong,
        _ => return Err(bad("unknown opcode")),
    })
}

fn header_has(req: &Req, name: &str, token: &str) -> bool {
    req.header(name).is_some_and(|v| {
        v.iter().any(|v| {
            v.as_str()
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// One record as the page shows it: `[node] text`, escaped, colours kept.
fn record_html(r: &crate::model::LogRecord) -> String {
    let line = if r.node.is_empty() {
        r.text.clone()
    } else {
        format!("[{}] {}", r.node, r.text)
    };
    crate::logs::ansi_to_html(&line)
}

pub async fn endpoint(req: Req) -> tide::Result {
    Ok(match handshake(req).await {
        Ok(r) => r,
        Err(e) => render(Err(e)),
    })
}

async fn handshake(req: Req) -> Result<tide::Response> {
    let app = req.state().clone();
    // Who is asking comes first: strangers learn nothing about tasks.
    principal(&req)?;
    let slave = param(&req, "slave")?;
    if slave != app.slave {
        return Err(Error::NotFound(format!(
            "this daemon is {:?}, not {slave:?}",
            app.slave
        )));
    }
    let uuid = query(&req)?.get("uuid").cloned().unwrap_or_default();
    if !crate::ids::is_uuid(&uuid) {
        return Err(Error::Bad(format!(
            "uuid: {uuid:?} is not a task uuid (12 characters of [A-Za-z0-9])"
        )));
    }
    let u2 = uuid.clone();
    let task = tasks::run(&app, move |app| app.store.task(&u2))
        .await?
        .ok_or_else(|| Error::NotFound(format!("no task {uuid}")))?;
    super::openc3_auth::authorize_on(&req, task.projectid, Role::Read).await?;
    let key = req
        .header("sec-websocket-key")
        .map(|k| k.last().as_str().to_string());
    let is_ws = header_has(&req, "upgrade", "websocket")
        && header_has(&req, "connection", "upgrade")
        && header_has(&req, "sec-websocket-version", "13");
    let Some(key) = key.filter(|_| is_ws) else {
        return Err(Error::Bad(
            "this endpoint speaks WebSocket (version 13): send Upgrade: websocket".into(),
        ));
    };
    let mut res = tide::Response::new(101);
    res.insert_header("upgrade", "websocket");
    res.insert_header("connection", "Upgrade");
    res.insert_header("sec-websocket-accept", accept_key(&key));
    let http: &mut tide::http::Response = res.as_mut();
    let upgrade = http.recv_upgrade().await;
    async_std::task::spawn(async move {
        if let Some(conn) = upgrade.await {
            if let Err(e) = stream(app, task, conn).await {
                log::debug!("log WebSocket ended: {e}");
            }
        }
    });
    Ok(res)
}

enum Wake {
    Log,
    Client(std::io::Result<Incoming>),
}

/// Sends the task's records until the task has ended, answering the client's
/// pings and close; the client's own messages are heartbeats.
async fn stream(
    app: Arc<App>,
    task: Task,
    conn: tide::http::upgrade::Connection,
) -> std::io::Result<()> {
    let (mut rd, mut wr) = futures_lite::io::split(conn);
    let (tx, rx) = async_channel::bounded::<std::io::Result<Incoming>>(4);
    let reader = async_std::task::spawn(async move {
        loop {
            let f = read_frame(&mut rd).await;
            let end = !matches!(f, Ok(Incoming::Data | Incoming::Ping(_) | Incoming::Pong));
            if tx.send(f).await.is_err() || end {
                return;
            }
        }
    });
    let result = pump(&app, &task, &mut wr, &rx).await;
    let _ = wr.close().await;
    drop(rx);
    reader.cancel().await;
    result
}

async fn pump<W: AsyncWrite + Unpin>(
    app: &Arc<App>,
    task: &Task,
    wr: &mut W,
    rx: &async_channel::Receiver<std::io::Result<Incoming>>,
) -> std::io::Result<()> {
    let mut offset = 0;
    loop {
        let listener = app.engine.logs.listen();
        let uuid = task.uuid.clone();
        // Completion first: records written before the end are then all visible.
        let read = tasks::run(app, move |app| {
            let done = app.store.task(&uuid)?.is_none_or(|t| t.is_finished());
            Ok((app.store.logs(&uuid, offset, PAGE)?, done))
        })
        .await;
        let (page, done) = match read {
            Ok(v) => v,
            Err(e) => {
                log::error!("log WebSocket of {}: {e}", task.uuid);
                wr.write_all(&frame(0x8, &1011u16.to_be_bytes())).await?;
                return Ok(());
            }
        };
        let full = page.len() >= PAGE;
        let mut out = Vec::new();
        for (seq, r) in &page {
            out.extend(frame(0x1, record_html(r).as_bytes()));
            offset = *seq;
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
            wr.flush().await?;
        }
        if done && !full {
            let mut close = 1000u16.to_be_bytes().to_vec();
            close.extend_from_slice(b"task finished");
            wr.write_all(&frame(0x8, &close)).await?;
            wr.flush().await?;
            return Ok(());
        }
        if full {
            continue;
        }
        // Wake on the next log commit, a client frame, or every 15 s to notice an end.
        let wake = async {
            listener.await;
            Wake::Log
        }
        .or(async {
            match rx.recv().await {
                Ok(f) => Wake::Client(f),
                Err(_) => Wake::Client(Err(std::io::ErrorKind::UnexpectedEof.into())),
            }
        })
        .or(async {
            async_io::Timer::after(Duration::from_secs(15)).await;
            Wake::Log
        })
        .await;
        match wake {
            Wake::Log | Wake::Client(Ok(Incoming::Data | Incoming::Pong)) => {}
            Wake::Client(Ok(Incoming::Ping(p))) => {
                wr.write_all(&frame(0xA, &p)).await?;
                wr.flush().await?;
            }
            Wake::Client(Ok(Incoming::Close)) => {
                wr.write_all(&frame(0x8, &1000u16.to_be_bytes())).await?;
                wr.flush().await?;
                return Ok(());
            }
            Wake::Client(Err(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_rfc_6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frame_lengths() {
        assert_eq!(frame(0x1, b"hi"), vec![0x81, 2, b'h', b'i']);
        let f = frame(0x1, &[0u8; 300]);
        assert_eq!(&f[..4], &[0x81, 126, 1, 44]);
        let f = frame(0x2, &vec![0u8; 70_000]);
        assert_eq!(f[1], 127);
        assert_eq!(f.len(), 70_000 + 10);
    }

    #[test]
    fn reads_masked_client_frames() {
        let mask = [1u8, 2, 3, 4];
        let mut bytes = vec![0x89, 0x80 | 3];
        bytes.extend_from_slice(&mask);
        bytes.extend(b"abc".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        let mut r = futures_lite::io::Cursor::new(bytes);
        let f = futures_lite::future::block_on(read_frame(&mut r)).expect("frame");
        assert_eq!(f, Incoming::Ping(b"abc".to_vec()));
        let mut r = futures_lite::io::Cursor::new(vec![0x81, 0x01, b'H']);
        assert!(futures_lite::future::block_on(read_frame(&mut r)).is_err());
    }
}
