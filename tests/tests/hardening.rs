//! Request limits and bounded log views, seen by a client on the wire:
//! 408/413/414/431 answers, the connection cap, bodies refused before they
//! are read, and log views of a 100 MB log that stream.

use jobx_tests::daemon::*;
use jobx_tests::flow::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn connect(d: &Daemon) -> TcpStream {
    let addr = d.base.trim_start_matches("http://");
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    s
}

/// One answer: status, head (lower case), body (by Content-Length).
fn read_answer(s: &mut TcpStream) -> Option<(u16, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((status, head, body))
}

/// Whether the daemon closed the connection (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("read timeout");
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

fn info(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["info"].as_str().map(String::from))
        .unwrap_or_default()
}

fn get_keepalive(s: &mut TcpStream, path: &str) -> Option<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    read_answer(s).map(|a| a.0)
}

#[test]
fn oversized_slow_and_huge_requests_get_their_answers() {
    let d = Daemon::start("[server]\nbody_timeout = 1\nheader_timeout = 1\n");

    // 414: a 10 KB request line.
    let mut s = connect(&d);
    let line = format!(
        "GET /node/10?{} HTTP/1.1\r\nHost: t\r\n\r\n",
        "x".repeat(10_000)
    );
    s.write_all(line.as_bytes()).expect("send");
    let (st, head, body) = read_answer(&mut s).expect("an answer to a long request line");
    assert_eq!(st, 414, "{head}");
    assert!(info(&body).contains("request line longer than"), "{body:?}");
    assert!(head.contains("connection: close"));
    assert!(closed_within(&mut s, Duration::from_secs(10)));

    // 431: 5,000 headers; and 150 small ones (a head under 8 KiB).
    for count in [5000, 150] {
        let mut s = connect(&d);
        let headers: String = (0..count).map(|i| format!("X-H{i}: v\r\n")).collect();
        let req = format!("GET /node/10 HTTP/1.1\r\nHost: t\r\n{headers}\r\n");
        // The daemon may answer before it has taken everything.
        let _ = s.write_all(req.as_bytes());
        let (st, _, body) = read_answer(&mut s).expect("an answer to many headers");
        assert_eq!(st, 431, "{count} headers");
        assert!(info(&body).contains("headers larger than"), "{body:?}");
    }

    // 408: a head that stops halfway.
    let mut s = connect(&d);
    s.write_all(b"GET /node/10 HTTP/1.1\r\nHost: t\r\nX-Slow:")
        .expect("send");
    let t0 = Instant::now();
    let (st, _, body) = read_answer(&mut s).expect("an answer to a slow head");
    assert_eq!(st, 408);
    assert!(info(&body).contains("server.header_timeout"), "{body:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());

    // 408: a body that stops halfway, from a known caller; then closed.
    let mut s = connect(&d);
    let req = format!(
        "POST /node/10 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"nodes\":"
    );
    s.write_all(req.as_bytes()).expect("send");
    let t0 = Instant::now();
    let (st, head, body) = read_answer(&mut s).expect("an answer to a slow body");
    assert_eq!(st, 408, "{head}");
    assert!(info(&body).contains("server.body_timeout"), "{body:?}");
    assert!(head.contains("connection: close"));
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(closed_within(&mut s, Duration::from_secs(10)));

    // 413: announced too large; answered before any body byte is sent.
    let mut s = connect(&d);
    let req = format!(
        "POST /node/10 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        8 << 20
    );
    s.write_all(req.as_bytes()).expect("send");
    let (st, head, body) = read_answer(&mut s).expect("an answer to a huge body");
    assert_eq!(st, 413, "{head}");
    assert!(info(&body).contains("server.max_body_bytes"), "{body:?}");
    assert!(head.contains("connection: close"));

    // None of it changed anything, and the daemon still answers.
    assert_eq!(d.data("/node/10"), json!([]));
    let mut s = connect(&d);
    assert_eq!(get_keepalive(&mut s, "/node/10"), Some(200));
    assert_eq!(get_keepalive(&mut s, "/node/10"), Some(200), "kept alive");
}

#[test]
fn a_body_from_a_stranger_is_refused_before_it_is_read() {
    // A long body timeout: an answer that came in time did not wait for the body.
    let d = Daemon::start("[server]\nbody_timeout = 60\n");
    for auth in ["", "Authorization: Bearer not-a-known-token\r\n"] {
        let mut s = connect(&d);
        let req = format!(
            "POST /node/10 HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n"
        );
        s.write_all(req.as_bytes()).expect("send");
        let t0 = Instant::now();
        // Not one byte of the body was sent, yet the answer comes.
        let (st, head, body) = read_answer(&mut s).expect("401 before the body");
        assert_eq!(st, 401, "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(!info(&body).is_empty());
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        assert!(closed_within(&mut s, Duration::from_secs(10)));
    }
    // A known caller's body is read and used.
    let mut s = connect(&d);
    let body = r#"{"nodes":[{"name":"a"}]}"#;
    let req = format!(
        "POST /node/10 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    assert_eq!(read_answer(&mut s).map(|a| a.0), Some(200));
    assert_eq!(d.data("/node/10")[0]["name"], "a");
    // A stranger's request without a body still reaches its route (its own 401).
    assert_eq!(d.req("GET", "/node/10", None, None).0, 401);
    // Unauthenticated requests add no series to the metrics.
    let series = |d: &Daemon| {
        let (_, v) = d.get("/metrics", ADMIN);
        v.as_str()
            .unwrap_or("")
            .lines()
            .filter(|l| l.starts_with("jobx_http_requests_total{"))
            .count()
    };
    series(&d);
    let before = series(&d);
    for i in 0..50 {
        assert_eq!(d.req("GET", &format!("/junk{i}/x{i}"), None, None).0, 404);
    }
    assert_eq!(series(&d), before);
    // A percent-encoded project id is no project id.
    let (st, v) = d.get("/node/%31%30", ADMIN);
    assert_eq!(st, 400, "{v}");
    assert!(
        v["info"].as_str().unwrap_or("").contains("projectid"),
        "{v}"
    );
}

#[test]
fn the_connection_cap_closes_idle_connections_first() {
    let d = Daemon::start("[server]\nmax_connections = 4\nbody_timeout = 60\n");
    // Four kept-alive connections, each idle after one request.
    let mut idle: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(&d);
            assert_eq!(get_keepalive(&mut s, "/mon"), Some(200));
            s
        })
        .collect();
    // A fifth is served; the longest-idle one is closed for it. (The last
    // connection may still be finishing its answer: retry until served.)
    let mut fifth = wait_for("a fifth connection to be served", T, || {
        let mut s = connect(&d);
        (get_keepalive(&mut s, "/mon") == Some(200)).then_some(s)
    });
    // Exactly one of the idle ones was closed (the longest idle: unit-tested).
    let answers: Vec<Option<u16>> = idle.iter_mut().map(|s| get_keepalive(s, "/mon")).collect();
    assert_eq!(
        answers.iter().filter(|a| a.is_none()).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|a| **a == Some(200)).count(),
        3,
        "{answers:?}"
    );
    assert_eq!(get_keepalive(&mut fifth, "/mon"), Some(200));
    drop(idle);
    drop(fifth);

    // Four busy connections (the daemon reads their bodies: 100 Continue).
    let busy: Vec<TcpStream> = wait_for("four connections reading bodies", T, || {
        let mut out = Vec::new();
        for _ in 0..4 {
            let mut s = connect(&d);
            let req = format!(
                "POST /node/10 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 24\r\n\r\n"
            );
            s.write_all(req.as_bytes()).ok()?;
            let mut got = [0u8; 25];
            s.read_exact(&mut got).ok()?;
            if !got.starts_with(b"HTTP/1.1 100") {
                return None;
            }
            out.push(s);
        }
        Some(out)
    });
    // None is idle: a newcomer is told the daemon is full.
    let mut s = connect(&d);
    s.write_all(b"GET /mon HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    let (st, _, body) = read_answer(&mut s).expect("503 at the cap");
    assert_eq!(st, 503);
    assert!(
        info(&body).contains("server.max_connections = 4"),
        "{body:?}"
    );
    // Finishing one busy request frees its connection for the next newcomer.
    let mut busy = busy;
    busy[0]
        .write_all(br#"{"nodes":[{"name":"b"}]}"#)
        .expect("body");
    assert_eq!(read_answer(&mut busy[0]).map(|a| a.0), Some(200));
    wait_for("a newcomer to be served again", T, || {
        let mut s = connect(&d);
        (get_keepalive(&mut s, "/mon") == Some(200)).then_some(())
    });
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Reads a whole log view: (time to the first body byte, total time,
/// bytes, the daemon's highest RSS meanwhile, the last bytes).
fn read_view(
    d: &Daemon,
    key: &str,
    accept: &str,
    query: &str,
) -> (Duration, Duration, usize, u64, String) {
    let mut s = connect(d);
    let req = format!(
        "GET /slave/test-slave/log/{key}{query} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    let t0 = Instant::now();
    s.write_all(req.as_bytes()).expect("send");
    // The daemon's memory, sampled every 10 ms while the view is read.
    let pid = d.pid();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut first = None;
    let mut total = 0usize;
    let mut tail = Vec::new();
    loop {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        first.get_or_insert_with(|| t0.elapsed());
        total += n;
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.join().expect("sampler");
    let first = first.expect("some bytes");
    (
        first,
        t0.elapsed(),
        total,
        peak,
        String::from_utf8_lossy(&tail).into_owned(),
    )
}

#[test]
fn log_views_of_a_100_mb_log_stream() {
    let d = Daemon::start("[logs]\nmax_bytes_per_step = 120000000\n");
    nodes(&d, 10, &["n1"]);
    group(&d, 10, "one", "list", "n1");
    // 100 MB without newlines: records of 32 KiB (the longest line kept).
    job(
        &d,
        10,
        "big",
        json!([{"plugin": "local", "timeout": 600, "script": "head -c 100000000 /dev/zero | tr '\\0' x; echo; echo last-record"}]),
    );
    let t0 = Instant::now();
    let uuid = start(&d, 10, "big", "one", json!({}));
    assert_eq!(
        wait_finished(&d, 10, &uuid, Duration::from_secs(600))["status"],
        "success"
    );
    eprintln!("100 MB log written in {:?}", t0.elapsed());
    // One read first: it fills the store's page cache (of a fixed size),
    // which is not memory of the requests measured below.
    read_view(&d, &uuid, "text/plain", "?format=text");
    let base = rss_kib(d.pid());

    // The page, then the text: the first bytes come long before the end, and
    // the daemon's memory stays far below the size of the log.
    for (name, accept, query, tail_has) in [
        ("HTML", "text/html", "", "[n1] last-record</div>"),
        ("text", "text/plain", "?format=text", "[n1] last-record\n"),
    ] {
        let (first, all, bytes, peak, tail) = read_view(&d, &uuid, accept, query);
        let grew = peak.saturating_sub(base) / 1024;
        eprintln!("{name}: first byte after {first:?}, {bytes} bytes in {all:?}, RSS +{grew} MiB");
        assert!(bytes > 100_000_000, "{name}: {bytes} bytes");
        // (Bodies are chunked: the last bytes are the end chunk.)
        let end = &tail[tail.len().saturating_sub(600)..];
        assert!(tail.contains(tail_has), "{name}: {end}");
        if name == "HTML" {
            assert!(tail.contains("</body></html>"), "{end}");
        }
        assert!(
            first * 5 < all,
            "{name}: first byte after {first:?} of {all:?}"
        );
        assert!(
            grew < 64,
            "RSS grew {grew} MiB serving a 100 MB log as {name}"
        );
    }

    // JSON pages stop at about 1 MiB of record text; next_offset is exact.
    let page = d.data(&format!(
        "/slave/test-slave/log/{uuid}?format=json&offset=0&max=10000"
    ));
    let records = page["records"].as_array().cloned().unwrap_or_default();
    let text: usize = records
        .iter()
        .map(|r| r["text"].as_str().map_or(0, str::len))
        .sum();
    assert!(!records.is_empty() && records.len() < 10_000);
    assert!(
        text <= (1 << 20) + 40_000,
        "{text} bytes of text in one page"
    );
    assert_eq!(page["completed"], false);
    let next = page["next_offset"].as_u64().expect("next_offset");
    assert_eq!(records.last().and_then(|r| r["seq"].as_u64()), Some(next));
    let more = d.data(&format!(
        "/slave/test-slave/log/{uuid}?format=json&offset={next}&max=5"
    ));
    assert_eq!(more["records"][0]["seq"].as_u64(), Some(next + 1));
}
