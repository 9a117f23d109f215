//! Backups while the daemon runs: `GET /backup` (admin on `*`) answers a
//! consistent snapshot of the whole store, and `jobxd backup --to FILE`
//! fetches it from the running daemon.
//!
//! The daemon copies every table as of one read snapshot into a new store
//! file (writers carry on meanwhile), then streams that file. The file is
//! created in the data dir and unlinked at once, so an interrupted backup
//! leaves nothing behind. The copy is a complete store: placed as
//! `<data_dir>/jobx.redb` of a stopped or new daemon it is a full restore.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::Store;
use futures_lite::io::{AsyncBufRead, AsyncRead};
use futures_lite::AsyncReadExt;
use std::io::{Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

/// One backup at a time: each holds a full copy of the store on disk.
static BUSY: AtomicBool = AtomicBool::new(false);

struct Busy;

impl Busy {
    fn take() -> Option<Busy> {
        (!BUSY.swap(true, Ordering::SeqCst)).then_some(Busy)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.store(false, Ordering::SeqCst);
    }
}

/// The response body: the snapshot file, holding the one-at-a-time slot
/// until the body is dropped (sent or abandoned).
pub struct Snapshot<R> {
    inner: R,
    _busy: Busy,
}

impl<R: AsyncRead + Unpin> AsyncRead for Snapshot<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<R: AsyncBufRead + Unpin> AsyncBufRead for Snapshot<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().inner).poll_fill_buf(cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.get_mut().inner).consume(amt)
    }
}

/// A snapshot being sent: an async reader over the file that holds the
/// one-at-a-time slot until it is dropped (sent or abandoned).
pub type Backup = Snapshot<async_std::io::BufReader<async_std::fs::File>>;

/// Takes a consistent snapshot of the store for `who` (already checked to
/// be admin on `*`); answers it with its length in bytes.
pub async fn take(store: std::sync::Arc<Store>, dir: PathBuf, who: &str) -> Result<(Backup, u64)> {
    let busy = Busy::take().ok_or_else(|| {
        Error::Conflict("a backup is being taken already; try again later".into())
    })?;
    let started = std::time::Instant::now();
    let (file, rows) = blocking::unblock(move || snapshot(&store, &dir)).await?;
    let len = file
        .metadata()
        .map_err(|e| Error::Internal(format!("backup: {e}")))?
        .len();
    log::info!(
        "backup for {who:?}: {rows} rows, {len} bytes, taken in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let reader =
        async_std::io::BufReader::with_capacity(256 * 1024, async_std::fs::File::from(file));
    Ok((
        Snapshot {
            inner: reader,
            _busy: busy,
        },
        len,
    ))
}

/// Writes the snapshot to an unlinked file in `dir` and returns it, rewound.
fn snapshot(store: &Store, dir: &Path) -> Result<(std::fs::File, u64)> {
    let io = |e: std::io::Error| Error::Internal(format!("backup: {e}"));
    let path = dir.join(format!(".backup-{}.redb", crate::ids::new_uuid()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    // Gone from the directory at once; the open handles keep the data.
    std::fs::remove_file(&path).map_err(io)?;
    let mut reader = file.try_clone().map_err(io)?;
    let rows = store.snapshot_into(file)?;
    reader.rewind().map_err(io)?;
    Ok((reader, rows))
}

/// The token `jobxd backup` presents: `JOBX_TOKEN`, else a configured
/// token with admin on `*`, else (no tokens configured) the admin token file.
fn client_token(cfg: &Config) -> std::result::Result<String, String> {
    if let Ok(t) = std::env::var("JOBX_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let admin = cfg.auth.tokens.iter().find_map(|t| {
        let star = t.roles.get("*") == Some(&crate::auth::Role::Admin);
        t.token.clone().filter(|_| star)
    });
    if let Some(t) = admin {
        return Ok(t);
    }
    if cfg.auth.tokens.is_empty() {
        let path = cfg.storage.data_dir.join("admin.token");
        return match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
            Ok(_) => Err(format!("{} is empty", path.display())),
            Err(e) => Err(format!(
                "cannot read {}: {e} (run as the service user or root, or set JOBX_TOKEN)",
                path.display()
            )),
        };
    }
    Err("no admin token on \"*\" in the configuration (tokens given as sha256 can not be used); set JOBX_TOKEN".into())
}

/// Where the daemon can be reached: its listen address, with an unspecified
/// IP (0.0.0.0, ::) replaced by loopback.
fn daemon_addr(cfg: &Config) -> std::result::Result<std::net::SocketAddr, String> {
    let mut addr: std::net::SocketAddr = cfg
        .server
        .listen
        .parse()
        .map_err(|_| format!("server.listen {:?} is not an address", cfg.server.listen))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(addr)
}

/// `jobxd backup --to FILE`: fetches a snapshot from the running daemon,
/// checks it opens as a store, and puts it in place atomically.
pub fn client(cfg: &Config, to: &Path) -> std::result::Result<(), String> {
    let token = client_token(cfg)?;
    let addr = daemon_addr(cfg)?;
    let dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = to
        .file_name()
        .ok_or_else(|| format!("--to {}: not a file name", to.display()))?
        .to_string_lossy()
        .to_string();
    let partial = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let result = async_std::task::block_on(fetch(addr, &token, &partial));
    let bytes = match result {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let tasks = match Store::check_file(&partial) {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(format!("the backup does not open as a store: {e}"));
        }
    };
    std::fs::rename(&partial, to).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        format!("cannot move the backup to {}: {e}", to.display())
    })?;
    // The rename itself must survive a crash too.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    println!(
        "backup of http://{addr} written to {} ({bytes} bytes, {tasks} tasks)",
        to.display()
    );
    Ok(())
}

/// Streams `GET /backup` into `partial` (created new, mode 0600, synced).
async fn fetch(
    addr: std::net::SocketAddr,
    token: &str,
    partial: &Path,
) -> std::result::Result<u64, String> {
    use tide::http::{Method, Request, Url};
    let url = Url::parse(&format!("http://{addr}/backup")).map_err(|e| e.to_string())?;
    let mut req = Request::new(Method::Get, url);
    req.insert_header("authorization", format!("Bearer {token}"));
    let stream = async_std::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot reach jobxd at {addr}: {e} (is it running?)"))?;
    let mut res = async_h1::connect(stream, req)
        .await
        .map_err(|e| format!("GET http://{addr}/backup: {e}"))?;
    let status = u16::from(res.status());
    if status != 200 {
        let text = res.body_string().await.unwrap_or_default();
        let info = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["info"].as_str().map(str::to_string))
            .unwrap_or(text);
        return Err(format!("jobxd at {addr} answered {status}: {info}"));
    }
    let expected = res.len().map(|n| n as u64);
    let mut body = res.take_body().into_reader();
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let write_err = |e: std::io::Error| format!("writing {}: {e}", partial.display());
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = body
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the backup from {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(write_err)?;
        total += n as u64;
    }
    if let Some(want) = expected {
        if total != want {
            return Err(format!(
                "the backup stream ended after {total} of {want} bytes"
            ));
        }
    }
    out.sync_all().map_err(write_err)?;
    Ok(total)
}
