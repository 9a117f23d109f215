//! The watchdog that leads every step's process group.

/// The watchdog, run as
/// `sh -c WATCHDOG jobx-watchdog <script file> <program> <args…>`.
/// It is a fixed text: step data only ever reaches it as arguments.
///
/// * fd 0 is the lifeline; it is moved to fd 3 and stdin becomes /dev/null.
/// * A background subshell blocks reading the lifeline; EOF (the daemon is
///   gone, or it closed the pipe) makes it remove the script file (nobody
///   else will) and `kill -9 0`: the whole group. It ignores SIGTERM so it
///   survives the group SIGTERM of a timeout or cancel.
/// * The step runs in the background without fd 3. The watchdog traps
///   SIGTERM (a handler, so the step does not inherit an ignored signal) to
///   keep waiting through the grace period, and exits with the step's status.
pub const WATCHDOG: &str = r#"f=$1; shift
exec 3<&0 0</dev/null
{ trap '' TERM; read -r _ <&3; rm -f -- "$f"; kill -9 0; } &
w=$!
exec 3<&-
trap : TERM
"$@" &
c=$!
while :; do
  wait "$c"; s=$?
  kill -0 "$c" 2>/dev/null || break
done
kill -9 "$w" 2>/dev/null
exit "$s"
"#;
