//! What an ssh failure means, from its exit code and its stderr.

/// A failed attempt to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// Worth trying again (refused, reset, dropped by `MaxStartups`, timed out).
    Transient {
        /// The line of ssh's stderr that explains it.
        message: String,
        /// Connection refused: nothing listens, so retry only briefly.
        refused: bool,
    },
    /// Trying again cannot help; the whole message for the step.
    Permanent(String),
}

/// The line of ssh's stderr that says the most: the last non-empty one that
/// is not part of the host key warning banner.
pub fn main_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('@'))
        .unwrap_or("ssh failed without a message")
        .to_string()
}

/// Classifies the stderr of an ssh that exited 255 before running anything.
pub fn connect_failure(stderr: &str, target: &str, known_hosts: &str) -> ConnectFailure {
    let has = |needle: &str| stderr.contains(needle);
    if has("REMOTE HOST IDENTIFICATION HAS CHANGED") || has("Host key for") && has("has changed") {
        // ssh names the known_hosts entry as `ssh-keygen -R` wants it
        // (`[host]:port` for other ports); the step's file is the daemon's.
        let entry = stderr
            .lines()
            .find_map(|l| {
                l.split("Host key for ")
                    .nth(1)?
                    .split(" has changed")
                    .next()
            })
            .unwrap_or(target);
        return ConnectFailure::Permanent(format!(
            "host key mismatch: {target} presented a host key that differs from the one recorded in {known_hosts}; \
             the recorded key was kept and nothing was run (if the change is expected, remove the old key with \
             ssh-keygen -R '{entry}' -f {known_hosts})"
        ));
    }
    if has("Host key verification failed") || has("host key is known for") {
        let detail = stderr
            .lines()
            .find(|l| l.contains("host key is known for"))
            .map(str::trim)
            .map(String::from)
            .unwrap_or_else(|| main_line(stderr));
        return ConnectFailure::Permanent(format!(
            "host key verification failed for {target}: {detail}"
        ));
    }
    if has("Permission denied") || has("Too many authentication failures") {
        return ConnectFailure::Permanent(format!(
            "authentication failed for {target}: {}",
            main_line(stderr)
        ));
    }
    if has("Could not resolve hostname") || has("Name or service not known") {
        return ConnectFailure::Permanent(format!("unreachable: {}", main_line(stderr)));
    }
    if has("Bad configuration option")
        || has("Unsupported option")
        || has("no argument after keyword")
        || has("command-line line")
        || has("terminating, ") && has("bad configuration options")
    {
        return ConnectFailure::Permanent(format!(
            "ssh configuration error: {}",
            main_line(stderr)
        ));
    }
    ConnectFailure::Transient {
        message: main_line(stderr),
        refused: has("Connection refused"),
    }
}

/// Whether a stderr line ending a session that exited 255 after the remote
/// command started is ssh reporting a lost connection (rather than the
/// step's own output before it exited 255).
pub fn is_connection_loss(line: &str) -> bool {
    let l = line.trim();
    (l.starts_with("Connection to ") && l.contains("closed"))
        || l.starts_with("client_loop: ")
        || l.starts_with("Timeout, server ")
        || l.starts_with("mux_client_")
        || l.starts_with("Control socket connect")
        || l.starts_with("ssh: ")
        || l.contains("Broken pipe")
        || l.contains("Connection reset by peer")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANGED: &str = "\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
It is also possible that a host key has just been changed.
The fingerprint for the ED25519 key sent by the remote host is
SHA256:abc.
Please contact your system administrator.
Add correct host key in /data/known_hosts to get rid of this message.
Offending ED25519 key in /data/known_hosts:1
Host key for [127.0.0.3]:4000 has changed and you have requested strict checking.
Host key verification failed.
";

    #[test]
    fn table() {
        let kh = "/data/known_hosts";
        let t = "root@127.0.0.3:4000";
        let cases: &[(&str, &str, bool)] = &[
            (CHANGED, "host key mismatch: root@127.0.0.3:4000 presented a host key that differs", false),
            (
                "No ED25519 host key is known for [h]:1 and you have requested strict checking.\nHost key verification failed.\n",
                "host key verification failed for root@127.0.0.3:4000: No ED25519 host key is known for [h]:1",
                false,
            ),
            ("root@h: Permission denied (publickey).\n", "authentication failed for root@127.0.0.3:4000: root@h: Permission denied (publickey).", false),
            ("ssh: Could not resolve hostname nope: Name or service not known\n", "unreachable: ssh: Could not resolve hostname nope", false),
            ("command-line line 0: Bad configuration option: foo\n", "ssh configuration error:", false),
        ];
        match connect_failure(CHANGED, t, kh) {
            ConnectFailure::Permanent(msg) => assert!(
                msg.ends_with("ssh-keygen -R '[127.0.0.3]:4000' -f /data/known_hosts)"),
                "{msg}"
            ),
            other => panic!("{other:?}"),
        }
        for (stderr, want, transient) in cases {
            match connect_failure(stderr, t, kh) {
                ConnectFailure::Permanent(msg) => {
                    assert!(!transient);
                    assert!(msg.starts_with(want), "{msg} / {want}");
                }
                other => panic!("{stderr}: {other:?}"),
            }
        }
        assert_eq!(
            connect_failure(
                "ssh: connect to host 127.0.0.1 port 9: Connection refused\n",
                t,
                kh
            ),
            ConnectFailure::Transient {
                message: "ssh: connect to host 127.0.0.1 port 9: Connection refused".into(),
                refused: true
            }
        );
        for dropped in [
            "kex_exchange_identification: Connection closed by remote host\nConnection closed by 127.0.0.2 port 22\n",
            "kex_exchange_identification: read: Connection reset by peer\n",
            "ssh: connect to host 10.0.0.1 port 22: Connection timed out\n",
            "",
        ] {
            assert!(
                matches!(connect_failure(dropped, t, kh), ConnectFailure::Transient { refused: false, .. }),
                "{dropped}"
            );
        }
    }

    #[test]
    fn main_line_skips_banner_and_blank_lines() {
        assert_eq!(main_line("a\n\nb\n\n"), "b");
        assert_eq!(main_line("x\n@@@@\n"), "x");
        assert_eq!(main_line(""), "ssh failed without a message");
    }

    #[test]
    fn connection_loss_lines() {
        assert!(is_connection_loss(
            "Connection to 127.0.0.2 closed by remote host."
        ));
        assert!(is_connection_loss(
            "client_loop: send disconnect: Broken pipe"
        ));
        assert!(!is_connection_loss("my script failed"));
    }
}
