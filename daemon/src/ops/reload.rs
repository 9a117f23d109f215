//! SIGHUP: read `[[auth.tokens]]` again from the configuration file. Added
//! tokens work and removed ones are refused from the next request on; a
//! file that does not parse or validate keeps the current tokens. Other
//! settings take effect at the next start.

use crate::auth::Tokens;
use crate::config::Config;
use crate::state::App;
use async_signal::{Signal, Signals};
use futures_lite::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Installs the SIGHUP handler (replacing the default, which would end the
/// process) and reloads on every signal.
pub fn watch(app: Arc<App>, config: Option<PathBuf>) -> std::io::Result<()> {
    let mut signals = Signals::new([Signal::Hup])?;
    async_std::task::spawn(async move {
        while signals.next().await.is_some() {
            super::notify_reloading();
            let (a, c) = (app.clone(), config.clone());
            blocking::unblock(move || reload(&a, c.as_deref())).await;
            super::notify_ready();
        }
    });
    Ok(())
}

fn reload(app: &App, config: Option<&Path>) {
    let Some(path) = config else {
        log::warn!("SIGHUP: jobxd was started without --config; there is nothing to reload");
        return;
    };
    match tokens_from(path, &app.config.storage.data_dir) {
        Ok((tokens, what)) => {
            app.set_tokens(tokens);
            log::info!("SIGHUP: reloaded {}: {what}", path.display());
        }
        Err(e) => log::error!("SIGHUP: keeping the current tokens: {e}"),
    }
}

/// The tokens a configuration file grants, as at start: with no
/// `[[auth.tokens]]`, the generated admin token of the data dir.
fn tokens_from(path: &Path, data_dir: &Path) -> Result<(Tokens, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let cfg = Config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if cfg.auth.tokens.is_empty() {
        let t = crate::admin_token(data_dir)?;
        return Ok((t, "the admin token file (no [[auth.tokens]])".into()));
    }
    let names: Vec<&str> = cfg.auth.tokens.iter().map(|t| t.name.as_str()).collect();
    Ok((
        Tokens::from_config(&cfg.auth.tokens),
        format!("{} token(s) ({})", names.len(), names.join(", ")),
    ))
}
