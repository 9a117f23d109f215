//! Our own accept loop over async-h1 (tide has none with graceful
//! shutdown): on SIGTERM/SIGINT stop accepting, let in-flight requests
//! finish (bounded), then return so that main can close the store.

use async_std::net::TcpListener;
use event_listener::Event;
use futures_lite::{FutureExt, StreamExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Requests being answered right now.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Event,
}

struct Guard(Arc<InFlight>);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify(usize::MAX);
        }
    }
}

impl InFlight {
    fn enter(self: &Arc<Self>) -> Guard {
        self.count.fetch_add(1, Ordering::SeqCst);
        Guard(self.clone())
    }

    async fn wait_idle(&self) {
        loop {
            let listener = self.idle.listen();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            listener.await;
        }
    }
}

/// Waits for SIGTERM or SIGINT.
async fn shutdown_signal() -> std::io::Result<()> {
    use async_signal::{Signal, Signals};
    let mut signals = Signals::new([Signal::Term, Signal::Int])?;
    let sig = signals.next().await;
    log::info!("received {sig:?}, shutting down");
    crate::ops::notify_stopping();
    Ok(())
}

enum Next {
    Conn(std::io::Result<(async_std::net::TcpStream, std::net::SocketAddr)>),
    Stop,
}

/// Serves `app` on `listener` until a shutdown signal arrives.
pub async fn serve<S: Clone + Send + Sync + 'static>(
    listener: TcpListener,
    app: tide::Server<S>,
) -> std::io::Result<()> {
    let inflight = Arc::new(InFlight::default());
    let stop = async {
        if let Err(e) = shutdown_signal().await {
            log::error!("cannot watch signals: {e}");
            futures_lite::future::pending::<()>().await;
        }
        Next::Stop
    };
    let mut stop = Box::pin(stop);
    loop {
        let next = async { Next::Conn(listener.accept().await) }
            .or(stop.as_mut())
            .await;
        match next {
            Next::Stop => break,
            Next::Conn(Err(e)) => {
                // Out of file descriptors and the like: back off briefly instead of spinning.
                log::warn!("accept failed: {e}");
                async_io::Timer::after(Duration::from_millis(50)).await;
            }
            Next::Conn(Ok((stream, _peer))) => {
                let app = app.clone();
                let inflight = inflight.clone();
                async_std::task::spawn(async move {
                    let served = async_h1::accept(stream, |req| {
                        let app = app.clone();
                        let guard = inflight.enter();
                        async move {
                            let res = app.respond(req).await;
                            drop(guard);
                            res
                        }
                    })
                    .await;
                    if let Err(e) = served {
                        log::debug!("connection ended: {e}");
                    }
                });
            }
        }
    }
    drop(listener);
    let drained = async {
        inflight.wait_idle().await;
        true
    }
    .or(async {
        async_io::Timer::after(Duration::from_secs(30)).await;
        false
    })
    .await;
    if !drained {
        log::warn!("requests still running after 30 s; stopping anyway");
    }
    Ok(())
}
