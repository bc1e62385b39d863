//! Live configuration: re-reading `servers_dir` on change (debounced file watching) or SIGHUP, and
//! servers from providers such as Docker, swapped into the running proxy without touching live sessions.

use crate::proxy::Handle;
use nethergate_core::config::{Catalog, ServerFiles};
use nethergate_core::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long file events are collected before one reload (editors write files in several steps).
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Rebuilds the route table from the server directory and providers, and swaps it in.
#[derive(Debug)]
pub struct Reloader {
    dir: PathBuf,
    catalog: Mutex<Catalog>,
    handle: Handle,
}

impl Reloader {
    /// A reloader for `dir` whose servers are `initial` (as loaded at startup).
    pub fn new(dir: &Path, initial: &[ServerConfig], handle: Handle) -> Arc<Reloader> {
        Arc::new(Reloader {
            dir: dir.to_path_buf(),
            catalog: Mutex::new(Catalog::new(initial)),
            handle,
        })
    }

    /// Applies `change` to a copy of the catalog; swaps the new table in only if it builds.
    fn apply(&self, what: &str, change: impl FnOnce(&mut Catalog)) {
        let mut catalog = self.catalog.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = catalog.clone();
        change(&mut next);
        if next == *catalog {
            return;
        }
        match next.route_table() {
            Ok(table) => {
                let servers = table.servers().len();
                self.handle.set_routes(table);
                *catalog = next;
                tracing::info!(servers, source = what, "configuration reloaded");
            }
            Err(errors) => {
                for issue in &errors.0 {
                    tracing::error!(file = %issue.source, key = %issue.key, reason = %issue.reason,
                        "reload rejected, previous routes stay live");
                }
            }
        }
    }

    /// Re-reads the server directory. A file that fails keeps its previous version live (its errors are
    /// logged with file, key and reason); a removed file removes its routes.
    pub fn reload_files(&self) {
        let fresh = match ServerFiles::read_dir(&self.dir) {
            Ok(f) => f,
            Err(errors) => {
                for issue in &errors.0 {
                    tracing::error!(file = %issue.source, key = %issue.key, reason = %issue.reason,
                        "reload failed, previous routes stay live");
                }
                return;
            }
        };
        self.apply("files", |catalog| {
            for issue in catalog.update_files(fresh) {
                tracing::error!(file = %issue.source, key = %issue.key, reason = %issue.reason,
                    "server file invalid, its previous version stays live");
            }
        });
    }

    /// Replaces every server of `provider` (e.g. `"docker"`).
    pub fn set_provider(&self, provider: &str, servers: Vec<ServerConfig>) {
        self.apply(provider, |catalog| catalog.set_provider(provider, servers));
    }
}

/// Keeps the directory watch alive; dropping it stops watching.
pub struct Watch {
    _debouncer: notify_debouncer_mini::Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>,
}

/// Watches the server directory and reloads (debounced) on any change to a `*.toml` file in it.
pub fn watch(reloader: Arc<Reloader>) -> Result<Watch, notify_debouncer_mini::notify::Error> {
    let dir = reloader.dir.clone();
    let mut debouncer = notify_debouncer_mini::new_debouncer(
        DEBOUNCE,
        move |events: notify_debouncer_mini::DebounceEventResult| match events {
            Ok(events) => {
                if events
                    .iter()
                    .any(|e| e.path.extension().is_some_and(|x| x == "toml"))
                {
                    reloader.reload_files();
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching the server directory failed"),
        },
    )?;
    debouncer.watcher().watch(
        &dir,
        notify_debouncer_mini::notify::RecursiveMode::NonRecursive,
    )?;
    Ok(Watch {
        _debouncer: debouncer,
    })
}
