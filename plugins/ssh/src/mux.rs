//! Opens a session over a node's ControlMaster by speaking OpenSSH's
//! multiplexing protocol (`PROTOCOL.mux`, version 4) on the control socket,
//! instead of starting an `ssh` client per step.
//!
//! The plugin makes three pipes and hands their far ends to the master
//! (`SCM_RIGHTS`), exactly as `ssh -O`'s own client does with its stdio:
//! the master then moves the channel's data between them and the node, and
//! reports the remote command's exit status on the socket. A step costs no
//! local process. Closing the write end of stdin sends EOF on the channel
//! (the remote lifeline's stop); dropping the socket makes the master close
//! the channel, as when an `ssh` client dies.

use std::fs::File;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use async_io::Async;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

const VERSION: u32 = 4;
const MSG_HELLO: u32 = 0x0000_0001;
const C_NEW_SESSION: u32 = 0x1000_0002;
const S_PERMISSION_DENIED: u32 = 0x8000_0002;
const S_FAILURE: u32 = 0x8000_0003;
const S_EXIT_MESSAGE: u32 = 0x8000_0004;
const S_SESSION_OPENED: u32 = 0x8000_0006;
/// "No escape character".
const NO_ESCAPE: u32 = 0xffff_ffff;
/// The master's messages are a few dozen bytes; anything far larger is not
/// a master speaking this protocol.
const MAX_MESSAGE: usize = 256 * 1024;
const REQUEST_ID: u32 = 1;

/// A session open on the master: its stdio and the control socket.
pub struct Session {
    ctl: Async<UnixStream>,
    session_id: u32,
    pub stdin: Option<Async<File>>,
    pub stdout: Option<Async<File>>,
    pub stderr: Option<Async<File>>,
}

/// A message body: `uint32` and `string` fields in SSH wire format.
#[derive(Default)]
struct Body(Vec<u8>);

impl Body {
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn string(mut self, s: &[u8]) -> Self {
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(s);
        self
    }
    /// The packet: length, then the body.
    fn packet(self) -> Vec<u8> {
        Body::default().string(&self.0).0
    }
}

/// Reads the fields of a received message.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u32(&mut self) -> io::Result<u32> {
        let (head, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("a message ends inside a number"))?;
        self.0 = rest;
        Ok(u32::from_be_bytes(*head))
    }
    fn string(&mut self) -> io::Result<String> {
        let len = self.u32()? as usize;
        if len > self.0.len() {
            return Err(bad("a message ends inside a string"));
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(String::from_utf8_lossy(s).into_owned())
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("mux protocol: {what}"))
}

/// The request that opens a session running `command`: no tty, no
/// forwarding, no environment (variables travel in the program).
fn new_session_request(command: &str) -> Vec<u8> {
    Body::default()
        .u32(C_NEW_SESSION)
        .u32(REQUEST_ID)
        .string(b"") // reserved
        .u32(0) // want tty
        .u32(0) // X11 forwarding
        .u32(0) // agent forwarding
        .u32(0) // subsystem
        .u32(NO_ESCAPE)
        .string(b"") // terminal type
        .string(command.as_bytes())
        .packet()
}

async fn read_message(ctl: &mut Async<UnixStream>) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    ctl.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if !(4..=MAX_MESSAGE).contains(&len) {
        return Err(bad(&format!("a message of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    ctl.read_exact(&mut body).await?;
    Ok(body)
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(File, File)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((File::from(r), File::from(w)))
}

/// Passes one descriptor with a one-byte payload, as the master expects.
async fn send_fd(ctl: &Async<UnixStream>, fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    ctl.write_with(|s| {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut cmsg = rustix::net::SendAncillaryBuffer::new(&mut space);
        let fds = [fd];
        if !cmsg.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::other("no room for a descriptor"));
        }
        let n = rustix::net::sendmsg(
            s,
            &[IoSlice::new(&[0u8])],
            &mut cmsg,
            rustix::net::SendFlags::NOSIGNAL,
        )?;
        if n == 1 {
            Ok(())
        } else {
            Err(io::Error::other("the descriptor was not sent"))
        }
    })
    .await
}

impl Session {
    /// Connects to the master at `ctl` and opens a session running
    /// `command`. An error means nothing was started on the node.
    pub async fn open(ctl: &Path, command: &str) -> io::Result<Session> {
        // Connected without blocking the plugin's runtime thread.
        let mut ctl = Async::<UnixStream>::connect(ctl).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("Control socket connect({}): {e}", ctl.display()),
            )
        })?;
        ctl.write_all(&Body::default().u32(MSG_HELLO).u32(VERSION).packet())
            .await?;
        let hello = read_message(&mut ctl).await?;
        let mut r = Reader(&hello);
        if r.u32()? != MSG_HELLO {
            return Err(bad("the master did not say hello"));
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(bad(&format!("the master speaks version {version}")));
        }

        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        ctl.write_all(&new_session_request(command)).await?;
        for fd in [in_r.as_fd(), out_w.as_fd(), err_w.as_fd()] {
            send_fd(&ctl, fd).await?;
        }
        // The master holds its own copies now; ours would keep the pipes
        // from ever reaching EOF.
        drop((in_r, out_w, err_w));

        let reply = read_message(&mut ctl).await?;
        let mut r = Reader(&reply);
        let session_id = match r.u32()? {
            S_SESSION_OPENED => {
                let _request = r.u32()?;
                r.u32()?
            }
            S_PERMISSION_DENIED | S_FAILURE => {
                let _request = r.u32()?;
                let reason = r.string()?;
                return Err(io::Error::other(format!(
                    "the master refused the session: {reason}"
                )));
            }
            other => return Err(bad(&format!("unexpected reply {other:#x}"))),
        };
        Ok(Session {
            ctl,
            session_id,
            stdin: Some(Async::new(in_w)?),
            stdout: Some(Async::new(out_r)?),
            stderr: Some(Async::new(err_r)?),
        })
    }

    /// The remote command's exit status. `None` when the master closed the
    /// socket without one (the command was killed by a signal, or the
    /// connection was lost), which `ssh` itself reports as exit 255.
    pub async fn exit_code(&mut self) -> Option<i32> {
        loop {
            let msg = read_message(&mut self.ctl).await.ok()?;
            let mut r = Reader(&msg);
            match r.u32().ok()? {
                S_EXIT_MESSAGE if r.u32().ok()? == self.session_id => {
                    return i32::try_from(r.u32().ok()?).ok();
                }
                // Anything else (e.g. `TTY_ALLOC_FAIL`, only sent for a tty,
                // which is never asked for) says nothing about the exit.
                _ => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_session_request_is_framed_as_the_master_parses_it() {
        let p = new_session_request("exec /bin/sh -s");
        let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
        assert_eq!(len, p.len() - 4);
        let mut r = Reader(&p[4..]);
        assert_eq!(r.u32().unwrap(), C_NEW_SESSION);
        assert_eq!(r.u32().unwrap(), REQUEST_ID);
        assert_eq!(r.string().unwrap(), "");
        for _ in 0..4 {
            assert_eq!(r.u32().unwrap(), 0);
        }
        assert_eq!(r.u32().unwrap(), NO_ESCAPE);
        assert_eq!(r.string().unwrap(), "");
        assert_eq!(r.string().unwrap(), "exec /bin/sh -s");
        assert!(r.0.is_empty());
    }

    #[test]
    fn truncated_messages_are_errors() {
        assert!(Reader(&[0, 0]).u32().is_err());
        assert!(Reader(&[0, 0, 0, 9, b'a']).string().is_err());
    }
}
