//! Command line (pure): `jobxd [--config PATH] [--listen ADDR] [--data-dir DIR] [--check-config]`,
//! and `jobxd backup --config PATH --to FILE`.

use std::path::PathBuf;

pub const USAGE: &str = "\
jobxd - run jobs on fleets of hosts in batches

usage: jobxd [options]
       jobxd backup [--config PATH] --to FILE
       jobxd token new NAME --role PROJECT=ROLE [--role ...]

options:
  --config PATH     configuration file (default: the embedded default config)
  --listen ADDR     listen address, overrides server.listen (e.g. 127.0.0.1:8080)
  --data-dir DIR    data directory, overrides storage.data_dir
  --check-config    validate the configuration and exit
  --version         print the version and exit
  --help            print this help and exit

backup:
  Asks the running daemon (at server.listen) for a consistent copy of its
  store and writes it to FILE. The token is JOBX_TOKEN, else a configured
  token with admin on \"*\", else <data_dir>/admin.token. To restore, stop
  jobxd and put FILE in place as <data_dir>/jobx.redb.

token new:
  Prints a fresh random token and the [[auth.tokens]] lines (with its
  sha256, not the token) to add to jobxd.toml. PROJECT is a project id or
  \"*\" (every project); ROLE is read, write, control or admin.
  Example: jobxd token new deploy-bot --role '*=read' --role 7=control

environment:
  RUST_LOG          log level: error, warn, info (default), debug, trace
";

#[derive(Debug, Default, PartialEq)]
pub struct Cli {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub check_config: bool,
    pub version: bool,
    pub help: bool,
    /// `backup`: take a backup from the running daemon.
    pub backup: bool,
    /// `--to FILE` of `backup`.
    pub to: Option<PathBuf>,
    /// `token new NAME`: the token's name.
    pub token_new: Option<String>,
    /// `--role PROJECT=ROLE` of `token new`, as given.
    pub roles: Vec<String>,
}

pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, String> {
    let mut cli = Cli::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "token" {
            if it.next().as_deref() != Some("new") {
                return Err("usage: jobxd token new NAME --role PROJECT=ROLE".into());
            }
            let name = it
                .next()
                .filter(|n| !n.starts_with('-'))
                .ok_or("token new needs a NAME")?;
            cli.token_new = Some(name);
            continue;
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--config" | "-c" => cli.config = Some(PathBuf::from(value("--config")?)),
            "--listen" => cli.listen = Some(value("--listen")?),
            "--data-dir" => cli.data_dir = Some(PathBuf::from(value("--data-dir")?)),
            "--check-config" => cli.check_config = true,
            "--version" | "-V" => cli.version = true,
            "--help" | "-h" => cli.help = true,
            "backup" => cli.backup = true,
            "--role" => cli.roles.push(value("--role")?),
            "--to" => cli.to = Some(PathBuf::from(value("--to")?)),
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if cli.backup && cli.to.is_none() && !cli.help {
        return Err("backup needs --to FILE".into());
    }
    if cli.token_new.is_some() && cli.roles.is_empty() {
        return Err(
            "token new needs at least one --role PROJECT=ROLE (e.g. --role '*=admin')".into(),
        );
    }
    if !cli.roles.is_empty() && cli.token_new.is_none() {
        return Err("--role belongs to: jobxd token new NAME --role PROJECT=ROLE".into());
    }
    if cli.to.is_some() && !cli.backup {
        return Err("--to belongs to the backup command: jobxd backup --to FILE".into());
    }
    Ok(cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Result<Cli, String> {
        parse(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags() {
        let c = p(&[
            "--config",
            "/etc/x.toml",
            "--listen=0.0.0.0:1",
            "--data-dir",
            "d",
        ])
        .expect("ok");
        assert_eq!(c.config, Some(PathBuf::from("/etc/x.toml")));
        assert_eq!(c.listen.as_deref(), Some("0.0.0.0:1"));
        assert_eq!(c.data_dir, Some(PathBuf::from("d")));
        assert!(p(&["--check-config"]).expect("ok").check_config);
        assert!(p(&["--listen"]).is_err());
        assert!(p(&["--bogus"]).is_err());
    }

    #[test]
    fn token_command() {
        let c = p(&[
            "token",
            "new",
            "bot",
            "--role",
            "*=read",
            "--role=7=control",
        ])
        .expect("ok");
        assert_eq!(c.token_new.as_deref(), Some("bot"));
        assert_eq!(c.roles, vec!["*=read", "7=control"]);
        assert!(p(&["token", "new", "bot"]).unwrap_err().contains("--role"));
        assert!(p(&["token", "new"]).unwrap_err().contains("NAME"));
        assert!(p(&["token", "old", "x"]).is_err());
        assert!(p(&["--role", "*=read"]).is_err());
    }

    #[test]
    fn backup_command() {
        let c = p(&[
            "backup",
            "--config",
            "/etc/jobx/jobxd.toml",
            "--to",
            "/tmp/b.redb",
        ])
        .expect("ok");
        assert!(c.backup);
        assert_eq!(c.to, Some(PathBuf::from("/tmp/b.redb")));
        assert_eq!(c.config, Some(PathBuf::from("/etc/jobx/jobxd.toml")));
        assert!(p(&["backup"]).unwrap_err().contains("--to"));
        assert!(p(&["--to", "x"]).unwrap_err().contains("backup"));
    }
}
