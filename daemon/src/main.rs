//! jobxd: the jobx daemon.

#![forbid(unsafe_code)]

mod api;
mod auth;
mod batching;
mod cli;
mod clock;
mod config;
mod engine;
mod error;
mod fields;
mod ids;
mod jobs;
mod labels;
mod logger;
mod logs;
mod metrics;
mod model;
mod notify;
mod ops;
mod policy;
mod server;
mod sessions;
mod state;
mod stats;
mod store;
mod vars;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

fn load_config(cli: &cli::Cli) -> Result<config::Config, String> {
    let mut cfg = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            config::Config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => {
            config::Config::parse(config::EMBEDDED).map_err(|e| format!("embedded config: {e}"))?
        }
    };
    if let Some(l) = &cli.listen {
        cfg.server.listen = l.clone();
    }
    if let Some(d) = &cli.data_dir {
        cfg.storage.data_dir = d.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

/// With no configured tokens, use (or create, mode 0600) `<data_dir>/admin.token`.
fn admin_token(data_dir: &Path) -> Result<auth::Tokens, String> {
    let path = data_dir.join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => {
            log::info!(
                "no tokens configured; using the admin token in {}",
                path.display()
            );
            return Ok(auth::Tokens::admin(t.trim()));
        }
        Ok(_) => {
            return Err(format!(
                "{} is empty; delete it to get a new token",
                path.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let token = ids::new_token();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    writeln!(f, "{token}")
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    log::warn!(
        "no tokens configured; created an admin token (name \"admin\", role admin on \"*\") in {}",
        path.display()
    );
    Ok(auth::Tokens::admin(&token))
}

/// Loads the executor plugins; each validates its own `[plugins.<type>]`
/// section. A daemon without any executor could run nothing: refused.
fn load_plugins(cfg: &config::Config) -> Result<jobx_plugin_api::host::PluginSet, String> {
    let dirs = cfg.plugin_dirs();
    let plugins = jobx_plugin_api::host::PluginSet::load(&dirs, &cfg.plugin_settings())?;
    if plugins.types().is_empty() {
        let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(format!(
            "no executor plugin (libjobx_plugin_*.so) found in plugins.dir: {}",
            searched.join(", ")
        ));
    }
    Ok(plugins)
}

/// The configured tokens, or the generated admin token when there are none.
fn tokens(cfg: &config::Config) -> Result<auth::Tokens, String> {
    if cfg.auth.tokens.is_empty() {
        return admin_token(&cfg.storage.data_dir);
    }
    let tokens = auth::Tokens::from_config(&cfg.auth.tokens);
    let file = cfg.storage.data_dir.join("admin.token");
    if file.exists() {
        log::warn!(
            "tokens are configured, so {} is no longer accepted",
            file.display()
        );
    }
    if !tokens.has_global_admin() {
        log::warn!(
            "no configured token has admin on \"*\": nobody can take backups; \
             add one with `jobxd token new NAME --role '*=admin'`"
        );
    }
    Ok(tokens)
}

fn run(cfg: config::Config, config_path: Option<PathBuf>) -> Result<(), String> {
    // Everything that can refuse the start comes before anything is written.
    let plugins = load_plugins(&cfg)?;
    let store = store::Store::open_with_cache(&cfg.storage.data_dir, cfg.storage.cache_mb)
        .map_err(|e| e.to_string())?;
    let tokens = tokens(&cfg)?;
    for (ty, file) in plugins.files() {
        log::info!("plugin {ty} loaded from {}", file.display());
    }
    let listen = cfg.server.listen.clone();
    let engine = engine::Engine::new(Arc::new(store), Arc::new(plugins), &cfg, cfg.slave_name())
        .map_err(|e| format!("cannot start the log writer thread: {e}"))?;
    let resumed = engine
        .recover()
        .map_err(|e| format!("restart recovery: {e}"))?;
    if resumed > 0 {
        log::info!("resumed {resumed} unfinished task(s)");
    }
    let mut retention = ops::retention::start(engine.store.clone(), &cfg.logs);
    let mut webhooks = notify::worker::start(engine.clone());
    let app = Arc::new(state::App::new(cfg, engine.clone(), tokens));
    ops::reload::watch(app.clone(), config_path)
        .map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
    async_std::task::block_on(async {
        let listener = async_std::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        log::info!(
            "jobxd {} listening on http://{addr} (slave {:?})",
            env!("CARGO_PKG_VERSION"),
            app.slave
        );
        ops::notify_ready();
        server::serve(listener, api::routes(app.clone()))
            .await
            .map_err(|e| e.to_string())
    })?;
    retention.stop();
    webhooks.stop();
    // Step logs queued so far are committed; dropping the last handle closes the store.
    engine.logs.close();
    drop(app);
    log::info!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    logger::init();
    let cli = match cli::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("jobxd: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.help {
        print!("{}", cli::USAGE);
        return ExitCode::SUCCESS;
    }
    if cli.version {
        println!("jobxd {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if let Some(name) = &cli.token_new {
        let token = ids::new_token();
        return match auth::token_entry(name, &token, &cli.roles) {
            Ok(entry) => {
                println!(
                    "token: {token}\n\n# add to jobxd.toml, then: systemctl reload jobxd\n{entry}"
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("jobxd token new: {e}");
                ExitCode::from(2)
            }
        };
    }
    let cfg = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("jobxd: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        return match load_plugins(&cfg) {
            Ok(p) => {
                println!("configuration ok (plugins: {})", p.types().join(", "));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("jobxd: configuration error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let (true, Some(to)) = (cli.backup, &cli.to) {
        return match ops::backup::client(&cfg, to) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("jobxd backup: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cfg, cli.config.clone()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
