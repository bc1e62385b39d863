//! Live configuration: re-reading `servers_dir` on change (debounced file watching) or SIGHUP, and
//! servers from providers such as Docker, swapped into the running proxy without touching live sessions.

use crate::proxy::Handle;
use nethergate_core::config::{Catalog, ServerFiles};
use nethergate_core::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long the server directory must be quiet after a change before it is re-read (editors and deploy
/// tools write files in several steps).
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
    messages: mpsc::Sender<Message>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum Message {
    Fs(notify::Result<notify::Event>),
    Stop,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.messages.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The longest a reload waits for the directory to go quiet (a file rewritten without pause).
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Whether `event` changes what the server directory `dir` holds: `None` if not, `Some(true)` if it is
/// about the directory itself (created, removed or renamed: it must be watched again), `Some(false)` for
/// an entry in it. Reads are not changes: inotify reports the proxy's own opens of the files it reloads,
/// and taking those for changes made every reload trigger the next.
fn relevance(event: &notify::Event, dir: &Path) -> Option<bool> {
    use notify::event::{AccessKind, AccessMode, EventKind};
    // A file closed after writing is the end of a change; every other access is a read.
    if matches!(event.kind, EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write))
    {
        return None;
    }
    if event.paths.is_empty() {
        return Some(false); // events were lost (queue overflow): look at everything again
    }
    if event.paths.iter().any(|p| p == dir) {
        return Some(true);
    }
    // Any entry, not only `*.toml`: a Kubernetes ConfigMap swaps a `..data` symlink the files point into.
    event
        .paths
        .iter()
        .any(|p| p.parent() == Some(dir))
        .then_some(false)
}

/// Watches the server directory and reloads once it has been quiet for [`DEBOUNCE`] after a change (at
/// most [`MAX_DELAY`] after the first one).
///
/// The directory's parent is watched too, so that a directory replaced whole (`mv servers.new servers`,
/// a symlink pointed elsewhere) is watched again instead of silently no more.
pub fn watch(reloader: Arc<Reloader>) -> Result<Watch, notify::Error> {
    use notify::{RecursiveMode, Watcher};
    let dir = std::path::absolute(&reloader.dir).unwrap_or_else(|_| reloader.dir.clone());
    let (messages, inbox) = mpsc::channel();
    let sender = messages.clone();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = sender.send(Message::Fs(event));
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    if let Some(parent) = dir.parent() {
        if let Err(e) = watcher.watch(parent, RecursiveMode::NonRecursive) {
            tracing::debug!(dir = %parent.display(), error = %e,
                "not watching the parent of the server directory: replacing the directory needs SIGHUP");
        }
    }
    let thread = std::thread::Builder::new()
        .name("nethergate-watch".into())
        .spawn(move || {
            // (first change, last change) since the last reload; whether the directory itself changed.
            let mut pending: Option<(Instant, Instant)> = None;
            let mut rewatch = false;
            loop {
                let message = match pending {
                    None => inbox.recv().ok(),
                    Some((first, last)) => {
                        let due = (last + DEBOUNCE).min(first + MAX_DELAY);
                        match inbox.recv_timeout(due.saturating_duration_since(Instant::now())) {
                            Ok(message) => Some(message),
                            Err(mpsc::RecvTimeoutError::Disconnected) => None,
                            Err(mpsc::RecvTimeoutError::Timeout) => {
                                if std::mem::take(&mut rewatch) {
                                    match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                                        Ok(()) => tracing::info!(dir = %dir.display(),
                                            "server directory replaced, watching the new one"),
                                        Err(e) => tracing::warn!(dir = %dir.display(), error = %e,
                                            "cannot watch the server directory; changes need SIGHUP until it is back"),
                                    }
                                }
                                pending = None;
                                reloader.reload_files();
                                continue;
                            }
                        }
                    }
                };
                let change = match message {
                    None | Some(Message::Stop) => return,
                    Some(Message::Fs(Ok(event))) => relevance(&event, &dir),
                    Some(Message::Fs(Err(e))) => {
                        tracing::warn!(error = %e, "watching the server directory failed; looking again");
                        Some(true)
                    }
                };
                if let Some(itself) = change {
                    let now = Instant::now();
                    pending = Some(pending.map_or((now, now), |(first, _)| (first, now)));
                    rewatch |= itself;
                }
            }
        })
        .map_err(notify::Error::io)?;
    Ok(Watch {
        messages,
        thread: Some(thread),
    })
}
