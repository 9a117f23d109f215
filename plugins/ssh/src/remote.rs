//! What runs on the node.
//!
//! The ssh command line carries no user data at all: it is always
//! [`REMOTE_COMMAND`], `exec /bin/sh -s`, so the login shell (whatever it
//! is) only replaces itself with `/bin/sh`, which reads its program from
//! the channel's stdin. The program is generated here as one `{ … }` group,
//! so the shell has read all of it before it runs any of it, and the rest
//! of stdin is left to the lifeline. Every user-supplied word in it (the
//! script, variables, arguments) is quoted with `shlex`, so they reach the
//! step byte for byte whatever the login shell is, and without sshd's
//! `AcceptEnv`.
//!
//! A command step costs one session and, besides the step itself, one
//! `/bin/sh` that stays, two short forks of it and one `rm`:
//!
//! 0. the shell prints [`STARTED`] before it creates anything: a session
//!    whose output is already gone (the daemon died while the login shell
//!    started) ends there, on SIGPIPE, and leaves no file behind;
//! 1. a subshell with `umask 077` and `set -C` (`O_EXCL`) writes the script
//!    to `${TMPDIR:-/tmp}/jobx-step-<128 random bits>` (mode 0600; the
//!    step's own umask is untouched);
//! 2. the shell starts
//!    `setsid env NAME=value… <interpreter> <file> <args…>` in the
//!    background: the step leads its own process group;
//! 3. a background subshell (the lifeline) reads the rest of stdin with the
//!    `read` builtin. The plugin keeps the ssh client's stdin open for as
//!    long as the step may run, so EOF comes only when the plugin stops the
//!    step (cancel, timeout), when the daemon dies and the kernel closes its
//!    pipe, or when the connection drops and sshd closes the session. On
//!    EOF it first creates `<file>.stop` (a builtin redirection), then sends
//!    SIGTERM to the step's group (to the step's process itself when EOF
//!    came so early that `setsid` has not made the group yet) and SIGKILL
//!    after [`KILL_GRACE_SECS`] if anything is left;
//! 4. the shell waits for the step. When the step exits by itself (no
//!    `.stop` file), whatever it left running in its group and the lifeline
//!    are killed; after a stop the lifeline's grace period runs its course.
//!    Both files are removed and the shell exits with the step's status.
//!
//! The stop is told through a file, not a trapped signal: a signal would
//! interrupt the shell's `wait`, and bash 5.2 then loses the step's status
//! (a second `wait` returns -1, exit 255) when the step ends during the
//! trap.

use std::collections::BTreeMap;

/// First line the wrapper prints on stdout before it starts the step: seeing
/// it means the remote command started (so an ssh exit 255 afterwards is
/// not a connection failure before start, and the step is not retried).
pub const STARTED: &str = "jobx:step-started:1";

/// Seconds between SIGTERM and SIGKILL when the lifeline stops a step.
pub const KILL_GRACE_SECS: u64 = 5;

/// Exit code of the wrapper when it cannot set the step up.
pub const SETUP_FAILED: i32 = 125;

/// The remote command of every session. No quote, backslash, `!` or
/// newline, so every login shell (sh, bash, zsh, fish, csh) runs it alike.
pub const REMOTE_COMMAND: &str = "exec /bin/sh -s";

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

/// A fresh name for a step's script file on the node: `jobx-step-` and 32
/// hex digits, 128 bits from the OS (plus a counter, so two names of this
/// process never repeat even if the OS source failed).
pub fn script_name() -> String {
    use std::io::Read;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    let from_os = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !from_os {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    for (b, c) in bytes.iter_mut().zip(n.to_le_bytes()) {
        *b ^= c;
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("jobx-step-{hex}")
}

/// The program of a command step, sent on the session's stdin.
///
/// `name` is the script file's name ([`script_name`]), a plain word. `wait`
/// runs with stderr discarded: dash reports a waited job killed by a signal
/// ("Terminated") on it, which is not the step's output.
pub fn command_program(
    env: &BTreeMap<String, String>,
    interpreter: &str,
    args: &[String],
    script: &str,
    name: &str,
) -> Result<String, String> {
    check_interpreter(interpreter)?;
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("bad script file name {name:?}"));
    }
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
    words.push("\"$JOBX__f\"".to_string());
    for (i, arg) in args.iter().enumerate() {
        words.push(quote_checked(&format!("argument {}", i + 1), arg)?);
    }
    let launch = words.join(" ");
    let script = quote_checked("the script", script)?;
    Ok(format!(
        "{{\n\
         echo {STARTED}\n\
         JOBX__f=${{TMPDIR:-/tmp}}/{name}\n\
         command -v setsid >/dev/null 2>&1 || {{ echo 'jobx: setsid not found on the node' >&2; exit {fail}; }}\n\
         (umask 077; set -C; exec 4>\"$JOBX__f\" || exit 3; printf %s {script} >&4 || exit 4) 2>/dev/null\n\
         JOBX__r=$?\n\
         if [ \"$JOBX__r\" != 0 ]; then\n\
         [ \"$JOBX__r\" = 4 ] && rm -f -- \"$JOBX__f\"\n\
         echo \"jobx: cannot write the script to $JOBX__f on the node\" >&2; exit {fail}\n\
         fi\n\
         exec 3<&0\n\
         {launch} </dev/null 3<&- &\n\
         JOBX__s=$!\n\
         {{ while read -r JOBX__x; do :; done; : >\"$JOBX__f.stop\"; kill -TERM -\"$JOBX__s\" || kill -TERM \"$JOBX__s\"; JOBX__n=0; \
         while [ \"$JOBX__n\" -lt {KILL_GRACE_SECS} ] && kill -0 -\"$JOBX__s\"; do sleep 1; JOBX__n=$((JOBX__n+1)); done; \
         kill -KILL -\"$JOBX__s\"; }} <&3 >/dev/null 2>&1 &\n\
         JOBX__w=$!\n\
         exec 3<&-\n\
         wait \"$JOBX__s\" 2>/dev/null; JOBX__r=$?\n\
         [ -e \"$JOBX__f.stop\" ] || kill -KILL -\"$JOBX__s\" \"$JOBX__w\" 2>/dev/null\n\
         rm -f -- \"$JOBX__f\" \"$JOBX__f.stop\"\n\
         exit \"$JOBX__r\"\n\
         }}\n",
        fail = SETUP_FAILED,
    ))
}

/// A helper script (copy preparation and finishing) as the program of a
/// session: one group, read whole before it runs.
pub fn helper_program(script: &str) -> String {
    format!("{{\n{script}}}\n")
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
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    /// Starts what the node would run, with this machine's /bin/sh: the
    /// remote command through `sh -c` (as sshd's login shell would), in a
    /// process group of its own (as sshd's session), with `program` written
    /// to its stdin. stdin is handed back open, as the plugin keeps it.
    fn spawn_remote(program: &str, stdout: Stdio) -> (Child, std::process::ChildStdin) {
        spawn_remote_with(REMOTE_COMMAND, program, stdout)
    }

    /// [`spawn_remote`] with another remote command (another `sh`).
    fn spawn_remote_with(
        command: &str,
        program: &str,
        stdout: Stdio,
    ) -> (Child, std::process::ChildStdin) {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(program.as_bytes()).unwrap();
        stdin.flush().unwrap();
        (child, stdin)
    }

    /// Runs a program to its end (stdin open until then).
    fn run_remote(program: &str) -> std::process::Output {
        let (child, stdin) = spawn_remote(program, Stdio::piped());
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        out
    }

    fn program(script: &str, interpreter: &str, args: &[String]) -> String {
        let mut env = BTreeMap::new();
        env.insert("JOBX_NODE".to_string(), "web-1".to_string());
        command_program(&env, interpreter, args, script, &script_name()).unwrap()
    }

    fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cond()
    }

    /// Pids of the processes in process group `pgid`, from /proc.
    fn group_members(pgid: u32) -> Vec<u32> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid pgrp …; comm may hold spaces.
            let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
                continue;
            };
            let fields: Vec<&str> = rest.split(' ').collect();
            if fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str()) {
                found.push(pid);
            }
        }
        found
    }

    fn marker(what: &str) -> String {
        format!("jobx-remote-{what}-{}", std::process::id())
    }

    #[test]
    fn the_remote_command_is_one_plain_word_list() {
        assert_eq!(REMOTE_COMMAND, "exec /bin/sh -s");
        assert!(!REMOTE_COMMAND.contains(['\'', '"', '\\', '\n', '!', '$']));
    }

    #[test]
    fn script_names_are_plain_and_fresh() {
        let a = script_name();
        let b = script_name();
        assert_ne!(a, b);
        assert_eq!(a.len(), "jobx-step-".len() + 32);
        assert!(a.starts_with("jobx-step-"));
        assert!(command_program(&BTreeMap::new(), "sh", &[], "true", "a/b").is_err());
        assert!(command_program(&BTreeMap::new(), "sh", &[], "true", "$x").is_err());
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

    const TRICKY: [&str; 10] = [
        "plain",
        "with space",
        "it's \"quoted\"",
        "$HOME and `id` and $(id) and ${x}",
        "back\\slash; rm -rf / #",
        "new\nline",
        "!bang ^caret *glob ?",
        "",
        "ünïcödé",
        "}\nexit 7\n{",
    ];

    #[test]
    fn script_variables_and_arguments_arrive_byte_for_byte() {
        let mut env = BTreeMap::new();
        for (i, v) in TRICKY.iter().enumerate() {
            env.insert(format!("v{i}"), v.to_string());
        }
        env.insert("JOBX_NODE".into(), "web-1".into());
        let args: Vec<String> = TRICKY.iter().map(|s| s.to_string()).collect();
        // The script itself holds every tricky text too, in a comment
        // and in a string it prints.
        let mut script = String::from(
            "for i in 0 1 2 3 4 5 6 7 8 9; do eval \"printf '%s\\0' \\\"\\$v$i\\\"\"; done; printf '%s\\0' \"$@\" \"$JOBX_NODE\"\n",
        );
        for t in TRICKY {
            script.push_str(&format!("# {}\n", t.replace('\n', " ")));
        }
        script.push_str("cat <<'EOF'\n}\n'\"$(x)\\\nEOF\n");
        let p = command_program(&env, "sh", &args, &script, &script_name()).unwrap();
        let out = run_remote(&p);
        assert!(out.status.success(), "{out:?}");
        let stdout = out.stdout;
        let first = format!("{STARTED}\n");
        assert!(stdout.starts_with(first.as_bytes()), "{stdout:?}");
        let (fields, tail) = stdout[first.len()..]
            .split_at(stdout[first.len()..].iter().rposition(|&b| b == 0).unwrap() + 1);
        let fields: Vec<&[u8]> = fields[..fields.len() - 1].split(|&b| b == 0).collect();
        let mut want: Vec<&[u8]> = TRICKY.iter().map(|s| s.as_bytes()).collect();
        want.extend(TRICKY.iter().map(|s| s.as_bytes()));
        want.push(b"web-1");
        assert_eq!(fields, want);
        assert_eq!(tail, b"}\n'\"$(x)\\\n");
    }

    #[test]
    fn exit_code_and_interpreter_are_the_scripts() {
        let script = "import sys\nprint(sys.argv[1])\nsys.exit(3)\n";
        let out = run_remote(&program(script, "python3", &["hi".into()]));
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{STARTED}\nhi\n")
        );
        assert!(out.stderr.is_empty(), "{out:?}");
    }

    #[test]
    fn the_script_file_is_private_removed_and_the_umask_is_the_callers() {
        let theirs = Command::new("/bin/sh")
            .args(["-c", "umask"])
            .output()
            .unwrap();
        let script = "stat -c %a \"$0\"; umask; echo \"$0\"";
        let out = run_remote(&program(script, "bash", &[]));
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "600", "{text}");
        assert_eq!(lines[2], String::from_utf8_lossy(&theirs.stdout).trim());
        assert!(lines[3].contains("/jobx-step-"), "{text}");
        assert!(!std::path::Path::new(lines[3]).exists(), "{text}");
    }

    #[test]
    fn a_setup_failure_exits_125_after_the_start_line_and_runs_nothing() {
        let p = program("echo never", "sh", &[])
            .replace("JOBX__f=${TMPDIR:-/tmp}/", "JOBX__f=/nonexistent-jobx-dir/");
        let out = run_remote(&p);
        assert_eq!(out.status.code(), Some(SETUP_FAILED), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{STARTED}\n"));
        assert!(String::from_utf8_lossy(&out.stderr).contains("jobx: cannot write the script"));
    }

    #[test]
    fn a_session_whose_output_is_gone_creates_no_script_file() {
        // The daemon died while the node's login shell started: the shell
        // finds its stdout closed when it begins.
        let name = script_name();
        let p = command_program(&BTreeMap::new(), "sh", &[], "echo never", &name).unwrap();
        let (r, w) = std::io::pipe().unwrap();
        drop(r);
        let (child, stdin) = spawn_remote_with(REMOTE_COMMAND, &p, Stdio::from(w));
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{out:?}");
        let file = std::env::temp_dir().join(&name);
        assert!(!file.exists(), "{} was left", file.display());
    }

    #[test]
    fn the_wrapper_is_one_shell_and_its_lifeline_beside_the_step() {
        let mark = marker("count");
        let script = format!("exec -a {mark} sleep 30");
        let (mut child, stdin) = spawn_remote(&program(&script, "bash", &[]), Stdio::null());
        assert!(wait_until(Duration::from_secs(10), || {
            !jobx_tests::sshd::processes_matching(&mark).is_empty()
        }));
        // The session's group: the shell and the lifeline; the step has
        // its own group.
        let members = group_members(child.id());
        assert_eq!(members.len(), 2, "{members:?}");
        let (step, _) = jobx_tests::sshd::processes_matching(&mark)[0].clone();
        assert_eq!(group_members(step as u32), [step as u32]);
        drop(stdin);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    }

    #[test]
    fn eof_on_stdin_kills_the_whole_step_group() {
        let mark = marker("eof");
        let script = format!("(exec -a {mark}-child sleep 60) & exec -a {mark} sleep 61");
        let (mut child, stdin) = spawn_remote(&program(&script, "bash", &[]), Stdio::null());
        assert!(wait_until(Duration::from_secs(10), || {
            jobx_tests::sshd::processes_matching(&mark).len() == 2
        }));
        let t = std::time::Instant::now();
        drop(stdin);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(128 + libc::SIGTERM));
        assert!(wait_until(Duration::from_secs(3), || {
            jobx_tests::sshd::processes_matching(&mark).is_empty()
        }));
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    #[test]
    fn a_stop_that_comes_with_the_program_leaves_nothing_running() {
        // The plugin closes stdin at once when the run is stopped while
        // its session starts: the lifeline may see EOF before the step
        // has made its own process group.
        let mark = marker("early");
        let script = format!("exec -a {mark} sleep 30");
        for _ in 0..20 {
            let (mut child, stdin) = spawn_remote(&program(&script, "bash", &[]), Stdio::null());
            drop(stdin);
            let ended = wait_until(Duration::from_secs(5), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            if !ended {
                let _ = child.kill();
                let _ = child.wait();
            }
            assert!(ended, "the wrapper still waits for a step the stop missed");
            assert!(
                wait_until(Duration::from_secs(3), || {
                    jobx_tests::sshd::processes_matching(&mark).is_empty()
                }),
                "left running: {:?}",
                jobx_tests::sshd::processes_matching(&mark)
            );
        }
    }

    #[test]
    fn a_stopped_step_gets_the_grace_period_then_sigkill() {
        let mark = marker("grace");
        // Not named after the marker: the script's arguments show in `ps`.
        let done = std::env::temp_dir().join(format!("jobx-grace-done-{}", std::process::id()));
        let _ = std::fs::remove_file(&done);
        // The leader dies of SIGTERM at once; one child cleans up for a
        // second, another ignores SIGTERM and must be killed after the grace.
        let script = format!(
            "(trap 'sleep 1; echo cleaned > \"$1\"; exit 0' TERM; while :; do sleep 0.1; done) &\n\
             (trap '' TERM; exec -a {mark}-stubborn sleep 60) &\n\
             exec -a {mark} sleep 61\n"
        );
        let (mut child, stdin) = spawn_remote(
            &program(&script, "bash", &[done.display().to_string()]),
            Stdio::null(),
        );
        assert!(wait_until(Duration::from_secs(10), || {
            jobx_tests::sshd::processes_matching(&mark).len() == 2
        }));
        let t = std::time::Instant::now();
        drop(stdin);
        child.wait().unwrap();
        assert!(
            wait_until(Duration::from_secs(4), || done.exists()),
            "the child's SIGTERM handler did not get to run"
        );
        assert!(
            wait_until(Duration::from_secs(KILL_GRACE_SECS + 3), || {
                jobx_tests::sshd::processes_matching(&mark).is_empty()
            }),
            "{:?}",
            jobx_tests::sshd::processes_matching(&mark)
        );
        assert!(t.elapsed() >= Duration::from_secs(KILL_GRACE_SECS - 1));
        let _ = std::fs::remove_file(&done);
    }

    #[test]
    fn bash_as_sh_runs_the_program_alike() {
        // /bin/sh is bash on some distributions.
        let bash = "exec bash --posix -s";
        let script = "printf '[%s]' \"$@\" \"$JOBX_NODE\"; stat -c %a \"$0\"; exit 5";
        let p = program(script, "sh", &["a b".into(), "it's".into()]);
        let (child, stdin) = spawn_remote_with(bash, &p, Stdio::piped());
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert_eq!(out.status.code(), Some(5), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{STARTED}\n[a b][it's][web-1]600\n")
        );

        let mark = marker("bash-eof");
        let script = format!("(exec -a {mark}-child sleep 60) & exec -a {mark} sleep 61");
        let (mut child, stdin) =
            spawn_remote_with(bash, &program(&script, "bash", &[]), Stdio::null());
        assert!(wait_until(Duration::from_secs(10), || {
            jobx_tests::sshd::processes_matching(&mark).len() == 2
        }));
        drop(stdin);
        assert_eq!(child.wait().unwrap().code(), Some(128 + libc::SIGTERM));
        assert!(wait_until(Duration::from_secs(3), || {
            jobx_tests::sshd::processes_matching(&mark).is_empty()
        }));
    }

    #[test]
    fn what_a_finished_step_leaves_in_its_group_is_killed() {
        let mark = marker("left");
        let script = format!("(exec -a {mark} sleep 60) >/dev/null 2>&1 &\necho started");
        let out = run_remote(&program(&script, "bash", &[]));
        assert!(out.status.success(), "{out:?}");
        assert!(wait_until(Duration::from_secs(3), || {
            jobx_tests::sshd::processes_matching(&mark).is_empty()
        }));
    }

    #[test]
    fn bad_names_and_nul_bytes_are_refused() {
        let none = BTreeMap::new();
        let name = script_name();
        let mut env = BTreeMap::new();
        env.insert("a-b".to_string(), "x".to_string());
        assert!(command_program(&env, "sh", &[], "true", &name).is_err());
        let mut env = BTreeMap::new();
        env.insert("JOBX__f".to_string(), "x".to_string());
        assert!(command_program(&env, "sh", &[], "true", &name).is_err());
        let mut env = BTreeMap::new();
        env.insert("a".to_string(), "x\0y".to_string());
        assert!(command_program(&env, "sh", &[], "true", &name).is_err());
        assert!(command_program(&none, "sh", &["\0".into()], "true", &name).is_err());
        assert!(command_program(&none, "sh", &[], "a\0b", &name).is_err());
        assert!(command_program(&none, "ruby", &[], "true", &name).is_err());
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
