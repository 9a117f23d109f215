//! The daemon's shared state, handed to every request handler.

use crate::auth::Tokens;
use crate::config::Config;
use crate::engine::Engine;
use crate::sessions::Sessions;
use crate::store::Store;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

pub struct App {
    pub config: Config,
    pub store: Arc<Store>,
    pub engine: Arc<Engine>,
    pub slave: String,
    /// Console sign-ins.
    pub sessions: Sessions,
    tokens: RwLock<Arc<Tokens>>,
    plugin_types: BTreeSet<String>,
}

impl App {
    pub fn new(config: Config, engine: Arc<Engine>, tokens: Tokens) -> App {
        let slave = config.slave_name();
        let plugin_types = engine.plugins.types().into_iter().collect();
        let sessions = Sessions::new(config.console.session_ttl_secs);
        App {
            sessions,
            config,
            store: engine.store.clone(),
            engine,
            slave,
            tokens: RwLock::new(Arc::new(tokens)),
            plugin_types,
        }
    }

    /// The current token table (replaced as a whole on reload).
    pub fn tokens(&self) -> Arc<Tokens> {
        match self.tokens.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set_tokens(&self, t: Tokens) {
        // Sessions of removed tokens end now (lookups check again anyway).
        self.sessions.retain_tokens(|d| t.by_digest(d).is_some());
        match self.tokens.write() {
            Ok(mut g) => *g = Arc::new(t),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(t),
        }
    }

    /// Types of the loaded executor plugins.
    pub fn plugin_types(&self) -> BTreeSet<String> {
        self.plugin_types.clone()
    }
}
