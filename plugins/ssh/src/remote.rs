//! What runs on the node.
//!
//! The ssh command line carries no user data at all: it is always
//!
//! ```text
//! exec /bin/sh -c 'JOBX__p=$(head -c "$1") && eval "$JOBX__p"' jobx <N>
//! ```
//!
//! which reads an N-byte shell program (the *preamble*) from the channel's
//! stdin and runs it. The preamble is generated here, every user-supplied
//! word in it quoted with `shlex`, so variables and arguments reach the
//! script byte for byte whatever the login shell is, and without sshd's
//! `AcceptEnv`.
//!
//! For a command step the preamble then reads the script (its length is in
//! the preamble) into a private temporary file, prints [`STARTED`] on stdout
//! and starts `setsid env NAME=value… <interpreter> <file> <args…>`: the step
//! is the leader of its own process group. A watchdog, also in its own
//! group, reads the rest of stdin; the plugin keeps the local ssh client's
//! stdin open for as long as the step may run, so stdin reaches EOF only
//! when the plugin stops the step (cancel, timeout) or when the daemon dies
//! and the kernel closes its pipe. On EOF the watchdog sends SIGTERM to the
//! step's group, then SIGKILL after a grace period. When the step exits by
//! itself, whatever it left running in its group is killed and the
//! watchdog is dismissed.

use std::collections::BTreeMap;

/// First line the wrapper prints on stdout before it starts the step: seeing
/// it means the remote command started (so an ssh exit 255 afterwards is
/// not a connection failure before start, and the step is not retried).
pub const STARTED: &str = "jobx:step-started:1";

/// Seconds between SIGTERM and SIGKILL when the watchdog stops a step.
pub const KILL_GRACE_SECS: u64 = 5;

/// Exit code of the wrapper when it cannot set the step up.
pub const SETUP_FAILED: i32 = 125;

/// The bootstrap run by the login shell. No single quote, backslash or
/// newline inside, so it survives as one quoted word in sh, bash, zsh,
/// fish and csh alike.
const BOOTSTRAP: &str = r#"JOBX__p=$(head -c "$1") && eval "$JOBX__p""#;

/// The remote command string for a preamble of `len` bytes.
pub fn remote_command(len: usize) -> String {
    format!("exec /bin/sh -c {} jobx {len}", quote(BOOTSTRAP))
}

fn quote(s: &str) -> String {
    // The callers only pass strings checked to be NUL-free.
    shlex::try_quote(s)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| "''".to_string())
}

fn quote_checked(what: &str, s: &str) -> Result<String, String> {
    shlex::try_quote(s)
        .map(|c| c.into_owned())
        .map_err(|_| format!("{what} contains a NUL byte"))
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`, so a name is a literal word everywhere.
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// bash, sh, python3, perl (looked up in the node's PATH) or an absolute path.
pub fn check_interpreter(interp: &str) -> Result<(), String> {
    let named = ["bash", "sh", "python3", "perl"].contains(&interp);
    let absolute =
        interp.starts_with('/') && !interp.contains('=') && !interp.chars().any(|c| c.is_control());
    if named || absolute {
        Ok(())
    } else {
        Err(format!(
            "unsupported interpreter {interp:?}: use bash, sh, python3, perl or an absolute path"
        ))
    }
}

/// The watchdog, run as `sh -c WATCHDOG jobx-watchdog <pgid> <dir> <grace>`
/// with the channel's stdin.
const WATCHDOG: &str = concat!(
    "cat >/dev/null; ",
    ": >\"$2/stop\"; ",
    "kill -TERM -\"$1\" 2>/dev/null; ",
    "n=0; ",
    "while kill -0 -\"$1\" 2>/dev/null && [ \"$n\" -lt \"$3\" ]; do sleep 1; n=$((n+1)); done; ",
    "kill -KILL -\"$1\" 2>/dev/null"
);

/// The preamble of a command step; the script follows it on stdin.
///
/// `wait` runs with stderr discarded: dash reports a waited job killed by a
/// signal ("Terminated") on it, which is not the step's output.
pub fn command_preamble(
    env: &BTreeMap<String, String>,
    interpreter: &str,
    args: &[String],
    script_len: usize,
) -> Result<String, String> {
    check_interpreter(interpreter)?;
    let mut words = Vec::with_capacity(env.len() + args.len() + 3);
    words.push("setsid env".to_string());
    for (name, value) in env {
        if !valid_env_name(name) || name.starts_with("JOBX__") {
            return Err(format!("invalid variable name {name:?}"));
        }
        words.push(quote_checked(
            &format!("variable {name}"),
            &format!("{name}={value}"),
        )?);
    }
    words.push(quote(interpreter));
    words.push("\"$JOBX__d/step\"".to_string());
    for (i, arg) in args.iter().enumerate() {
        words.push(quote_checked(&format!("argument {}", i + 1), arg)?);
    }
    let launch = words.join(" ");
    Ok(format!(
        "JOBX__d=$(mktemp -d 2>/dev/null) || {{ echo 'jobx: cannot create a temporary directory on the node' >&2; exit {fail}; }}\n\
         head -c {script_len} >\"$JOBX__d/step\" || {{ rm -rf \"$JOBX__d\"; exit {fail}; }}\n\
         command -v setsid >/dev/null 2>&1 || {{ echo 'jobx: setsid not found on the node' >&2; rm -rf \"$JOBX__d\"; exit {fail}; }}\n\
         exec 3<&0\n\
         echo {STARTED}\n\
         {launch} </dev/null 3<&- &\n\
         JOBX__s=$!\n\
         setsid sh -c {watchdog} jobx-watchdog \"$JOBX__s\" \"$JOBX__d\" {KILL_GRACE_SECS} <&3 >/dev/null 2>&1 &\n\
         JOBX__w=$!\n\
         exec 3<&-\n\
         wait \"$JOBX__s\" 2>/dev/null; JOBX__r=$?\n\
         if [ ! -e \"$JOBX__d/stop\" ]; then kill -KILL -\"$JOBX__s\" -\"$JOBX__w\" 2>/dev/null; fi\n\
         rm -rf \"$JOBX__d\"\n\
         exit \"$JOBX__r\"\n",
        fail = SETUP_FAILED,
        watchdog = quote(WATCHDOG),
    ))
}

/// Lines the copy preparation prints.
pub const COPY_DST_IS_DIR: &str = "jobx:dst-is-dir";
/// The node has rsync.
pub const COPY_HAS_RSYNC: &str = "jobx:has-rsync";

/// Prepares a copy: tells whether `dst` is a directory, creates `mkdir`
/// (the directory that must exist before the copy) unless `dst` is a
/// directory, and tells whether the node has rsync.
pub fn copy_prepare(dst: &str, mkdir: &str) -> Result<String, String> {
    let dst = quote_checked("dst", dst)?;
    let mkdir = quote_checked("dst", mkdir)?;
    Ok(format!(
        "if [ -d {dst} ]; then echo {COPY_DST_IS_DIR}; else mkdir -p -- {mkdir} || exit 1; fi\n\
         if command -v rsync >/dev/null 2>&1; then echo {COPY_HAS_RSYNC}; fi\n"
    ))
}

/// Line printed when `chown` is skipped because the login user is not root.
pub const CHOWN_SKIPPED: &str = "jobx:chown-skipped";

/// After a copy: moves a directory copied to `staged` into place (scp
/// cannot make `dst` equal `src` by itself), then applies `chmod` and
/// `chown` to the target itself.
pub fn copy_finish(
    target: &str,
    staged: Option<(&str, bool)>,
    chmod: Option<&str>,
    chown: Option<&str>,
) -> Result<String, String> {
    let t = quote_checked("dst", target)?;
    let mut s = String::new();
    if let Some((staged, delete)) = staged {
        let st = quote_checked("dst", staged)?;
        if delete {
            s.push_str(&format!(
                "rm -rf -- {t} && mv -- {st} {t} || {{ rm -rf -- {st}; exit 1; }}\n"
            ));
        } else {
            s.push_str(&format!(
                "mkdir -p -- {t} && cp -pPR -- {st}/. {t}/ || {{ rm -rf -- {st}; exit 1; }}\nrm -rf -- {st}\n"
            ));
        }
    }
    if let Some(mode) = chmod {
        check_mode(mode)?;
        s.push_str(&format!("chmod {mode} -- {t} || exit 1\n"));
    }
    if let Some(owner) = chown {
        check_owner(owner)?;
        s.push_str(&format!(
            "if [ \"$(id -u)\" = 0 ]; then chown {owner} -- {t} || exit 1; else echo {CHOWN_SKIPPED}; fi\n"
        ));
    }
    Ok(s)
}

/// An octal mode such as `755` or `0644`.
pub fn check_mode(mode: &str) -> Result<(), String> {
    if (3..=4).contains(&mode.len()) && mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        Ok(())
    } else {
        Err(format!(
            "invalid chmod {mode:?}: expected an octal mode like 0755"
        ))
    }
}

/// `user`, `user:group` or `:group`, names made of `[A-Za-z0-9._-]` not
/// starting with `-`.
pub fn check_owner(owner: &str) -> Result<(), String> {
    let name_ok = |n: &str| {
        !n.starts_with('-')
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    let (user, group) = match owner.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (owner, None),
    };
    let ok = match group {
        None => !user.is_empty() && name_ok(user),
        Some(g) => !g.is_empty() && name_ok(g) && name_ok(user),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid chown {owner:?}: expected user, user:group or :group"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Runs what the node would run, with this machine's /bin/sh: the remote
    /// command through `sh -c` (as sshd's login shell would) with `input` on
    /// stdin.
    /// stdin stays open until the command exits, as the plugin keeps it.
    fn run_remote(preamble: &str, rest: &[u8]) -> std::process::Output {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(remote_command(preamble.len()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(preamble.as_bytes()).unwrap();
        stdin.write_all(rest).unwrap();
        stdin.flush().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let err = std::thread::spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut stderr, &mut v).unwrap();
            v
        });
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut out).unwrap();
        let status = child.wait().unwrap();
        drop(stdin);
        std::process::Output {
            status,
            stdout: out,
            stderr: err.join().unwrap(),
        }
    }

    #[test]
    fn bootstrap_is_one_plain_single_quoted_word() {
        let cmd = remote_command(42);
        assert_eq!(
            cmd,
            r#"exec /bin/sh -c 'JOBX__p=$(head -c "$1") && eval "$JOBX__p"' jobx 42"#
        );
        assert!(!BOOTSTRAP.contains(['\'', '\\', '\n', '!']));
    }

    #[test]
    fn env_names_follow_the_variable_rule() {
        for ok in ["a", "_x", "JOBX_NODE", "version2"] {
            assert!(valid_env_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a b", "a=b", "é"] {
            assert!(!valid_env_name(bad), "{bad}");
        }
    }

    #[test]
    fn interpreters_are_named_or_absolute() {
        for ok in [
            "bash",
            "sh",
            "python3",
            "perl",
            "/usr/bin/env",
            "/opt/my tool/x",
        ] {
            assert!(check_interpreter(ok).is_ok(), "{ok}");
        }
        for bad in ["ruby", "bash -e", "./x", "/a=b", ""] {
            assert!(check_interpreter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn variables_and_arguments_arrive_byte_for_byte() {
        let tricky = [
            "plain",
            "with space",
            "it's \"quoted\"",
            "$HOME and `id` and $(id) and ${x}",
            "back\\slash; rm -rf / #",
            "new\nline",
            "!bang ^caret *glob ?",
            "",
            "ünïcödé",
        ];
        let mut env = BTreeMap::new();
        for (i, v) in tricky.iter().enumerate() {
            env.insert(format!("v{i}"), v.to_string());
        }
        env.insert("JOBX_NODE".into(), "web-1".into());
        let args: Vec<String> = tricky.iter().map(|s| s.to_string()).collect();
        let script = "for i in 0 1 2 3 4 5 6 7 8; do eval \"printf '%s\\0' \\\"\\$v$i\\\"\"; done; printf '%s\\0' \"$@\" \"$JOBX_NODE\"";
        let pre = command_preamble(&env, "sh", &args, script.len()).unwrap();
        let out = run_remote(&pre, script.as_bytes());
        assert!(out.status.success(), "{out:?}");
        let stdout = out.stdout;
        let first = format!("{STARTED}\n");
        assert!(stdout.starts_with(first.as_bytes()), "{stdout:?}");
        let fields: Vec<&[u8]> = stdout[first.len()..].split(|&b| b == 0).collect();
        let mut want: Vec<&[u8]> = tricky.iter().map(|s| s.as_bytes()).collect();
        want.extend(tricky.iter().map(|s| s.as_bytes()));
        want.push(b"web-1");
        want.push(b"");
        assert_eq!(fields, want);
    }

    #[test]
    fn exit_code_and_interpreter_are_the_scripts() {
        let script = "import sys\nprint(sys.argv[1])\nsys.exit(3)\n";
        let pre =
            command_preamble(&BTreeMap::new(), "python3", &["hi".into()], script.len()).unwrap();
        let out = run_remote(&pre, script.as_bytes());
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{STARTED}\nhi\n")
        );
    }

    #[test]
    fn eof_on_stdin_kills_the_whole_step_group() {
        let marker = format!("jobx-eof-test-{}", std::process::id());
        let script = format!("sleep 60 & exec -a {marker} sleep 61");
        let pre = command_preamble(&BTreeMap::new(), "bash", &[], script.len()).unwrap();
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(remote_command(pre.len()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(pre.as_bytes()).unwrap();
        stdin.write_all(script.as_bytes()).unwrap();
        stdin.flush().unwrap();
        assert!(jobx_tests::sshd::wait_until(
            std::time::Duration::from_secs(10),
            || !jobx_tests::sshd::processes_matching(&marker).is_empty()
        ));
        drop(stdin);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(128 + libc::SIGTERM));
        assert!(jobx_tests::sshd::processes_matching(&marker).is_empty());
    }

    #[test]
    fn bad_names_and_nul_bytes_are_refused() {
        let mut env = BTreeMap::new();
        env.insert("a-b".to_string(), "x".to_string());
        assert!(command_preamble(&env, "sh", &[], 0).is_err());
        let mut env = BTreeMap::new();
        env.insert("JOBX__d".to_string(), "x".to_string());
        assert!(command_preamble(&env, "sh", &[], 0).is_err());
        let mut env = BTreeMap::new();
        env.insert("a".to_string(), "x\0y".to_string());
        assert!(command_preamble(&env, "sh", &[], 0).is_err());
        assert!(command_preamble(&BTreeMap::new(), "sh", &["\0".into()], 0).is_err());
        assert!(command_preamble(&BTreeMap::new(), "ruby", &[], 0).is_err());
    }

    #[test]
    fn modes_and_owners() {
        for ok in ["755", "0644", "4755"] {
            assert!(check_mode(ok).is_ok(), "{ok}");
        }
        for bad in ["", "8", "u+x", "07555", "75 5"] {
            assert!(check_mode(bad).is_err(), "{bad}");
        }
        for ok in ["root", "www-data:www-data", ":adm", "a.b_c"] {
            assert!(check_owner(ok).is_ok(), "{ok}");
        }
        for bad in ["", ":", "a:", "-r", "a b", "a;b", "a:-g", "u:g:x"] {
            assert!(check_owner(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn copy_scripts_quote_paths() {
        let p = copy_prepare("/opt/my app", "/opt").unwrap();
        assert!(p.contains("[ -d '/opt/my app' ]"));
        let f = copy_finish(
            "/o'x",
            Some(("/o'x.tmp", true)),
            Some("0755"),
            Some("root:root"),
        )
        .unwrap();
        let words = shlex::split(f.lines().next().unwrap()).unwrap();
        assert_eq!(&words[..4], ["rm", "-rf", "--", "/o'x"]);
        assert!(f.contains("chmod 0755 --"));
        assert!(copy_finish("/x", None, Some("9"), None).is_err());
        assert!(copy_finish("/x", None, None, Some("a;b")).is_err());
    }
}
