//! Live configuration: re-reading `servers_dir` on change (debounced file watching) or SIGHUP, and
//! servers from providers such as Docker, swapped into the running proxy without touching live sessions.

use crate::proxy::Handle;
use nethergate_core::config::{Catalog, ConfigErrors, ConfigIssue, EntryName, ServerFiles};
use nethergate_core::{RouteTable, ServerConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long the server directory must be quiet after a change before it is re-read (editors and deploy
/// tools write files in several steps).
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// The source name of the server directory's reloads (providers have their own names).
const FILES: &str = "files";

/// Rebuilds the route table from the server directory and providers, and swaps it in.
#[derive(Debug)]
pub struct Reloader {
    dir: PathBuf,
    /// The main file, left out should `dir` be its own directory.
    main_file: Option<PathBuf>,
    /// The sources (the server files, each provider) whose last reload was rejected or failed: the next
    /// clean one from the same source says so. Per source: a provider's unchanged poll says nothing about
    /// a broken file, nor a SIGHUP about a provider's lasting conflict.
    failing: Mutex<BTreeSet<String>>,
    /// What each source's last rejected change proposed, and why it was rejected: the same proposal from
    /// a provider's next poll (a conflict that lasts, nothing else changed) is not logged again; a
    /// different one is. Tried again whenever another source's change goes live.
    rejected: Mutex<BTreeMap<String, Held>>,
    catalog: Mutex<Catalog>,
    /// Held while the server directory is read and applied: reads are applied in the order made.
    reading: Mutex<()>,
    /// The files of `dir` that look like another proxy's (`*.yaml`, `*.json`), as last warned about: a
    /// reload warns about the ones that are new.
    foreign: Mutex<BTreeSet<String>>,
    handle: Handle,
}

impl Reloader {
    /// A reloader for `dir` whose servers are `initial` (as loaded at startup); `main_file` is not a
    /// server file even if it is in `dir`.
    pub fn new(
        dir: &Path,
        main_file: Option<&Path>,
        initial: &[ServerConfig],
        handle: Handle,
    ) -> Arc<Reloader> {
        Arc::new(Reloader {
            dir: dir.to_path_buf(),
            main_file: main_file.map(Path::to_path_buf),
            failing: Mutex::new(BTreeSet::new()),
            rejected: Mutex::new(BTreeMap::new()),
            catalog: Mutex::new(Catalog::new(initial)),
            reading: Mutex::new(()),
            foreign: Mutex::new(BTreeSet::new()),
            handle,
        })
    }

    /// The foreign files ([`ServerFiles::warnings`]) already warned about at startup, not to be warned
    /// about again by a reload.
    pub fn foreign_warned(&self, warnings: &[ConfigIssue]) {
        let mut known = self.foreign.lock().unwrap_or_else(PoisonError::into_inner);
        *known = warnings.iter().map(|w| w.source.clone()).collect();
    }

    /// Warns about each foreign file that was not there at the last read.
    fn warn_new_foreign(&self, warnings: Vec<ConfigIssue>) {
        let mut known = self.foreign.lock().unwrap_or_else(PoisonError::into_inner);
        for warning in warnings.iter().filter(|w| !known.contains(&w.source)) {
            crate::cli::log_warning(warning);
        }
        *known = warnings.into_iter().map(|w| w.source).collect();
    }

    /// The live routes match what `what` proposes again: its next rejection, whatever it proposes, is
    /// news. Another source's rejection stays remembered (it still proposes the same).
    fn forget_rejected(&self, what: &str) {
        let mut rejected = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
        rejected.remove(what);
    }

    /// Records whether `what`'s last reload met problems; `true` when it had and no longer has.
    fn set_failing(&self, what: &str, failing: bool) -> bool {
        let mut set = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if failing {
            set.insert(what.to_owned());
            return false;
        }
        set.remove(what)
    }

    /// Makes `next` the live catalog and its table the live routes, warning about what looks wrong in the
    /// servers it brings; gives how many servers are live.
    fn swap_in(&self, catalog: &mut Catalog, (next, table): (Catalog, RouteTable)) -> usize {
        for warning in next
            .new_or_changed(catalog)
            .iter()
            .flat_map(|s| s.warnings())
        {
            crate::cli::log_warning(&warning);
        }
        let servers = table.servers().len();
        self.handle.set_routes(table);
        *catalog = next;
        servers
    }

    /// Applies `change` to a copy of the catalog; swaps the new table in only if it builds.
    /// `change` says whether it met (and logged) problems of its own, such as a broken file.
    ///
    /// `retry`: `change` is a change of `what` held up by a conflict, tried again because another
    /// source's change went live (see [`Reloader::retry_held`]); rejected again, it is reported only if
    /// the conflict is another one.
    ///
    /// When the change goes live, gives the other sources whose changes are held up: they may fit now.
    fn apply(
        &self,
        what: &str,
        retry: bool,
        change: impl FnOnce(&mut Catalog) -> bool,
    ) -> Vec<String> {
        let mut catalog = self.catalog.lock().unwrap_or_else(PoisonError::into_inner);
        let mut problems = false;
        match prepare(&catalog, |c| problems = change(c)) {
            Outcome::Unchanged if problems => {
                self.set_failing(what, true);
            }
            Outcome::Unchanged => {
                self.forget_rejected(what);
                if self.set_failing(what, false) {
                    // The problem went away without changing what is live (e.g. the conflicting file was
                    // removed): the admin who saw the error learns it is over.
                    tracing::info!(
                        source = what,
                        servers_dir = &*self.dir.to_string_lossy(),
                        "configuration valid again; the live routes are unchanged"
                    );
                }
            }
            Outcome::Reloaded(reloaded) => {
                self.forget_rejected(what);
                let servers = self.swap_in(&mut catalog, *reloaded);
                self.set_failing(what, problems);
                let message = match retry {
                    true => "configuration reloaded: a change held up by a conflict fits now",
                    false => "configuration reloaded",
                };
                tracing::info!(servers, source = what, "{message}");
                let rejected = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
                return rejected.keys().cloned().collect();
            }
            Outcome::Rejected(errors, next) => {
                self.set_failing(what, true);
                let mut rejected = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
                // A file's change is reported each time (an admin made it); a provider's poll that proposes
                // the same servers again is not news. One that proposes others (a container started while
                // the conflict lasts) is: it is held up too. A held change tried again is news only if
                // its conflict is another one.
                let held = rejected.get(what);
                let seen = match retry {
                    true => held.is_some_and(|h| h.errors == errors),
                    false => what != FILES && held.is_some_and(|h| h.proposal == *next),
                };
                if seen {
                    tracing::debug!(source = what, "reload rejected again for the same reasons");
                } else {
                    for issue in &errors.0 {
                        log_issue(issue, "reload rejected, previous routes stay live");
                    }
                }
                let held = Held {
                    proposal: *next,
                    errors,
                };
                rejected.insert(what.to_owned(), held);
            }
        }
        Vec::new()
    }

    /// Tries again the held changes of the sources `due` (what [`Reloader::apply`] gave for a change that
    /// went live), and those of every source held when one of them goes live (which may free another): a
    /// file removed whose domain a container claims lets the container in at once, not at the provider's
    /// next poll. Each goes live at most once (going live, it is held no more), so this ends.
    fn retry_all(&self, mut due: Vec<String>) {
        while let Some(source) = due.pop() {
            for more in self.retry_held(&source) {
                if !due.contains(&more) {
                    due.push(more);
                }
            }
        }
    }

    /// Tries again the change of `source` that a conflict held up; gives what [`Reloader::apply`] gives.
    /// The server files are read afresh, not taken from the held read (a file removed or edited since
    /// must not come back as it was); a provider's proposal is its last one.
    fn retry_held(&self, source: &str) -> Vec<String> {
        if source == FILES {
            return self.read_and_apply_files(true);
        }
        let proposal = {
            let rejected = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
            match rejected.get(source) {
                Some(held) => held.proposal.clone(),
                None => return Vec::new(),
            }
        };
        self.apply(source, true, |c| {
            c.adopt_provider(source, &proposal);
            false
        })
    }

    /// Reads the server directory as it is now.
    fn read_files(&self) -> Result<ServerFiles, ConfigErrors> {
        ServerFiles::read_dir(&self.dir, self.main_file.as_deref())
    }

    /// Re-reads the server directory and applies it (`retry`: for a change of the files held up by a
    /// conflict; their problems are not logged again, and an unreadable directory leaves it held).
    ///
    /// One read is applied at a time, in the order they were made: an older read (a SIGHUP's) applied
    /// after a newer one (the watch's) would undo a change that no event will report again. The
    /// directory is read before the live catalog is taken, so a slow read (NFS) holds up other file
    /// reloads only.
    fn read_and_apply_files(&self, retry: bool) -> Vec<String> {
        let _in_order = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = match self.read_files() {
            Ok(fresh) => fresh,
            Err(errors) if retry => {
                tracing::debug!(error = %errors, "server directory unreadable; its held change waits");
                return Vec::new();
            }
            Err(errors) => {
                for issue in &errors.0 {
                    log_issue(issue, "reload failed, previous routes stay live");
                }
                self.set_failing(FILES, true);
                return Vec::new();
            }
        };
        self.warn_new_foreign(fresh.warnings());
        self.apply(FILES, retry, |catalog| match retry {
            // Logged by the reload that read the change bringing them (a file broken since, by the watch
            // event or SIGHUP that follows its change).
            true => !catalog.update_files(fresh).is_empty(),
            false => update_files(catalog, fresh),
        })
    }

    /// Re-reads the server directory. A file that fails keeps its previous version live (its errors are
    /// logged with file, key and reason); a removed file removes its routes. Changes of other sources
    /// that a conflict held up are tried again if the files' change goes live.
    pub fn reload_files(&self) {
        let due = self.read_and_apply_files(false);
        self.retry_all(due);
    }

    /// Replaces every server of `provider` (e.g. `"docker"`).
    pub fn set_provider(&self, provider: &str, servers: Vec<ServerConfig>) {
        let due = self.apply(provider, false, |catalog| {
            catalog.set_provider(provider, servers);
            false
        });
        self.retry_all(due);
    }
}

/// A change a conflict held up: the catalog it proposed and the problems reported for it.
#[derive(Debug)]
struct Held {
    proposal: Catalog,
    errors: ConfigErrors,
}

/// What a change to the live catalog comes to.
enum Outcome {
    /// The servers are the same: nothing to swap.
    Unchanged,
    /// The new catalog and its route table.
    Reloaded(Box<(Catalog, RouteTable)>),
    /// The table does not build (a conflict); each problem names a source that is new or changed. With
    /// the catalog that was proposed.
    Rejected(ConfigErrors, Box<Catalog>),
}

/// Applies `change` to a copy of `current` (the live catalog) and builds the new route table.
fn prepare(current: &Catalog, change: impl FnOnce(&mut Catalog)) -> Outcome {
    let mut next = current.clone();
    change(&mut next);
    if next == *current {
        return Outcome::Unchanged;
    }
    // A conflict is blamed on what this reload brought, not on a file that was live and unchanged.
    match next.route_table_since(current) {
        Ok(table) => Outcome::Reloaded(Box::new((next, table))),
        Err(errors) => Outcome::Rejected(errors, Box::new(next)),
    }
}

/// Applies a fresh read of the server directory to `catalog`, logging the files that failed.
/// Applies the files read; `true` when some were invalid (and logged).
fn update_files(catalog: &mut Catalog, fresh: ServerFiles) -> bool {
    let issues = catalog.update_files(fresh);
    for (issue, kept) in &issues {
        let message = match kept {
            true => "server file invalid, its previous version stays live",
            false => "server file invalid, not loaded",
        };
        log_issue(issue, message);
    }
    !issues.is_empty()
}

/// Logs a configuration problem with its file, key (when it has one: a syntax error may not) and reason.
pub(crate) fn log_issue(issue: &ConfigIssue, message: &str) {
    // A `None` field is left out of the line.
    use nethergate_core::config::Escaped;
    // Escaped: whoever writes a server file chooses its name, keys and quoted values.
    let key = (!issue.key.is_empty()).then(|| tracing::field::display(Escaped(&issue.key)));
    tracing::error!(file = %Escaped(&issue.source), key, reason = %Escaped(&issue.reason), "{message}");
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
pub const MAX_DELAY: Duration = Duration::from_secs(2);

/// Whether `event` changes what the server directory `dir` holds: `None` if not, `Some(true)` if it is
/// about the directory itself (removed or renamed: which directory the path names must be checked),
/// `Some(false)` for an entry in it. Reads are not changes: inotify reports the proxy's own opens of the files it reloads,
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
    event
        .paths
        .iter()
        .any(|p| p.parent() == Some(dir) && p.file_name().is_some_and(may_hold_a_server))
        .then_some(false)
}

/// Whether a change to the entry `name` of the server directory may change what is read from it: a
/// `*.toml` (another proxy's `*.yaml`, `*.yml` or `*.json`, which is warned about), or a `..` entry (a
/// Kubernetes ConfigMap swaps a `..data` symlink the files point into). Not an editor's swap or lock file
/// (`.lobby.toml.swp`, `.#lobby.toml`) or anything else no reload reads, whose every write would otherwise
/// reload and report each broken file again. (A server file that links into another directory swapped
/// whole is caught by the [`IDENTITY_CHECK`] of what links lead to.)
fn may_hold_a_server(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b"..") || EntryName::of(name) != EntryName::Other
}

/// Whether `event` may mean that the watch on `dir` is gone: the directory itself removed or renamed, or
/// events lost (a queue overflow may have dropped just that). Not a change of its mode or owner: the
/// watch stays through those.
fn may_lose_watch(event: &notify::Event, dir: &Path) -> bool {
    use notify::event::{EventKind, ModifyKind};
    event.paths.is_empty()
        || (event.paths.iter().any(|p| p == dir)
            && matches!(
                event.kind,
                EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
            ))
}

/// How often the watch thread checks that `servers_dir` still names the directory it watches, and
/// whether a file a symlink in it leads to has changed.
pub const IDENTITY_CHECK: Duration = Duration::from_secs(5);

/// Which directory `dir` names now (device and inode, following symlinks), if any.
#[cfg(unix)]
fn identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// Elsewhere a replaced directory is not noticed: SIGHUP (README).
#[cfg(not(unix))]
fn identity(_dir: &Path) -> Option<(u64, u64)> {
    None
}

/// What a symlink in `dir` leads to: its name, and the file at the end of it (device, inode, size,
/// modification and change times), if there is one.
type Linked = Vec<(std::ffi::OsString, Option<[i64; 7]>)>;

/// The symlinks in `dir` that are read as server files (`*.toml`, not hidden) and what each leads to now,
/// in name order. A link to a file outside `dir` (`servers/lobby.toml -> /srv/lobby/proxy.toml`) is
/// edited where inotify on `dir` sees nothing, so the watch thread compares this at every
/// [`IDENTITY_CHECK`]: one `stat` a link, nothing for plain files. Other links (a log file linked in, an
/// editor's lock link) are not looked at: their changes are no server's, and a reload for them would
/// report every broken file again.
#[cfg(unix)]
fn linked(dir: &Path) -> Linked {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut links: Linked = entries
        .flatten()
        .filter(|e| EntryName::of(&e.file_name()) == EntryName::Server)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .map(|e| {
            let target = std::fs::metadata(e.path()).ok().map(|m| {
                let (dev, ino, size) = (m.dev() as i64, m.ino() as i64, m.size() as i64);
                [
                    dev,
                    ino,
                    size,
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                ]
            });
            (e.file_name(), target)
        })
        .collect();
    links.sort();
    links
}

/// Elsewhere an edit behind a link is noticed at SIGHUP only.
#[cfg(not(unix))]
fn linked(_dir: &Path) -> Linked {
    Vec::new()
}

/// Watches the server directory and reloads once it has been quiet for [`DEBOUNCE`] after a change (at
/// most [`MAX_DELAY`] after the first one).
///
/// inotify follows the directory, not its path: a directory replaced whole (`mv servers.new servers`, a
/// symlink pointed elsewhere) would silently be watched no more. So the thread also checks, every
/// [`IDENTITY_CHECK`] and soon after an event about the directory itself, which directory the path names,
/// and watches the new one (and reloads) when it changed. The parent directory is not watched: whatever
/// else lives there (often the proxy's own log file) would wake the watch on every write.
pub fn watch(reloader: Arc<Reloader>) -> Result<Watch, notify::Error> {
    use notify::{RecursiveMode, Watcher};
    let dir = std::path::absolute(&reloader.dir).unwrap_or_else(|_| reloader.dir.clone());
    let (messages, inbox) = mpsc::channel();
    let sender = messages.clone();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = sender.send(Message::Fs(event));
    })?;
    // Which directory is watched is read here, before the watch is added, not when the thread first runs:
    // a directory repointed in between would otherwise count as the watched one, and never be followed.
    let watched = identity(&dir);
    let links = linked(&dir);
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    // What changed between the startup read and now (while the proxy bound and started its threads), no
    // event reports: read the files once more. Unchanged, this logs nothing.
    reloader.reload_files();
    let thread = std::thread::Builder::new()
        .name("nethergate-watch".into())
        .spawn(move || watch_loop(&inbox, watcher, &dir, (watched, links), &reloader))
        .map_err(notify::Error::io)?;
    Ok(Watch {
        messages,
        thread: Some(thread),
    })
}

/// The watch thread: collects events, reloads when due, and checks which directory `dir` names (`watched`:
/// the one it named when the watch was added) and what its symlinks lead to (`links`, as then).
fn watch_loop(
    inbox: &mpsc::Receiver<Message>,
    mut watcher: notify::RecommendedWatcher,
    dir: &Path,
    (mut watched, mut links): (Option<(u64, u64)>, Linked),
    reloader: &Reloader,
) {
    use notify::{RecursiveMode, Watcher};
    // (first change since the last reload, when to reload).
    let mut pending: Option<(Instant, Instant)> = None;
    let mut next_check = Instant::now() + IDENTITY_CHECK;
    // The directory itself removed or renamed, events lost, or a watch that failed: the watch may be gone
    // even where the path names the same inode again (`rm -rf servers && mkdir servers` reuses it on
    // ext4), so it is added afresh at the next check (and at every check while adding it fails).
    let mut maybe_lost = false;
    // Adding the watch failed (logged once, until it succeeds).
    let mut failing = false;
    loop {
        let wake = pending.map_or(next_check, |(_, due)| due.min(next_check));
        let message = match inbox.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(message) => Some(message),
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => None,
        };
        let now = Instant::now();
        match message {
            Some(Message::Stop) => return,
            Some(Message::Fs(event)) => {
                let change = match event {
                    Ok(event) => {
                        maybe_lost |= may_lose_watch(&event, dir);
                        relevance(&event, dir)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "watching the server directory failed; looking again");
                        maybe_lost = true;
                        Some(true)
                    }
                };
                if let Some(itself) = change {
                    let first = pending.map_or(now, |(first, _)| first);
                    pending = Some((first, (now + DEBOUNCE).min(first + MAX_DELAY)));
                    if itself || maybe_lost {
                        next_check = next_check.min(now + DEBOUNCE);
                    }
                }
                continue;
            }
            None => {}
        }
        if now >= next_check {
            next_check = now + IDENTITY_CHECK;
            let now_linked = linked(dir);
            if now_linked != links {
                // A file behind a link was edited, or a link changed (that one inotify saw too).
                links = now_linked;
                pending.get_or_insert((now, now));
            }
            let current = identity(dir);
            let replaced = current != watched;
            if replaced || (maybe_lost && current.is_some()) {
                // The old watch goes first: notify keeps one entry per path, and a stale one (a directory
                // renamed away still has its watch) would take the new watch with it when the old
                // directory is deleted later. For a watch the kernel dropped already, this is an error.
                let _ = watcher.unwatch(dir);
                let retry = failing && !replaced;
                match current.map(|_| watcher.watch(dir, RecursiveMode::NonRecursive)) {
                    Some(Ok(())) => {
                        if replaced {
                            tracing::info!(dir = %dir.display(),
                                "server directory replaced, watching the new one");
                        } else if retry {
                            tracing::info!(dir = %dir.display(), "watching the server directory again");
                        } else {
                            tracing::info!(dir = %dir.display(),
                                "server directory watched again (it was deleted and made again, or \
                                 its events were lost)");
                        }
                        (maybe_lost, failing) = (false, false);
                    }
                    Some(Err(e)) => {
                        if !retry {
                            tracing::warn!(dir = %dir.display(), error = %e,
                                "cannot watch the server directory; trying again every 5 s, and \
                                 SIGHUP reloads meanwhile");
                        }
                        (maybe_lost, failing) = (true, true);
                    }
                    None => {
                        tracing::warn!(dir = %dir.display(),
                            "the server directory is gone; its servers stay live until it is back");
                        (maybe_lost, failing) = (false, false);
                    }
                }
                watched = current;
                // The directory itself changed: reload now (not at each retry that fails again).
                let failed_again = retry && failing;
                if !failed_again {
                    pending = Some((now, now));
                }
            }
        }
        if pending.is_some_and(|(_, due)| now >= due) {
            pending = None;
            reloader.reload_files();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_removal_a_rename_or_lost_events_may_lose_the_watch() {
        use notify::event::{
            AccessKind, AccessMode, CreateKind, EventKind, MetadataKind, ModifyKind, RemoveKind,
            RenameMode,
        };
        let dir = Path::new("/srv/nethergate/servers");
        let on = |kind: EventKind, path: &Path| notify::Event::new(kind).add_path(path.to_owned());
        let entry = dir.join("lobby.toml");
        let removed = EventKind::Remove(RemoveKind::Folder);
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::From));
        let chmod = EventKind::Modify(ModifyKind::Metadata(MetadataKind::Permissions));
        assert!(may_lose_watch(&on(removed, dir), dir));
        assert!(may_lose_watch(&on(renamed, dir), dir));
        assert!(
            may_lose_watch(&notify::Event::new(EventKind::Other), dir),
            "overflow"
        );
        // The watch stays through a chmod or chown of the directory, and through anything in it.
        assert!(!may_lose_watch(&on(chmod, dir), dir));
        assert!(!may_lose_watch(&on(removed, &entry), dir));
        assert!(!may_lose_watch(
            &on(EventKind::Create(CreateKind::File), &entry),
            dir
        ));
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(!may_lose_watch(&on(closed, &entry), dir));
        // Each is still a change to look at.
        assert_eq!(relevance(&on(chmod, dir), dir), Some(true));
        assert_eq!(relevance(&on(removed, &entry), dir), Some(false));
    }

    #[test]
    fn only_entries_a_reload_reads_are_changes() {
        use notify::event::{CreateKind, EventKind};
        let dir = Path::new("/srv/nethergate/servers");
        let created = |name: &str| {
            let event = notify::Event::new(EventKind::Create(CreateKind::File));
            relevance(&event.add_path(dir.join(name)), dir)
        };
        for read in [
            "lobby.toml",
            "LOBBY.TOML",
            "old.yml",
            "old.yaml",
            "old.JSON",
            "..data",
            "..2026_12_08",
        ] {
            assert_eq!(created(read), Some(false), "{read}");
        }
        for unread in [
            ".lobby.toml.swp",
            ".#lobby.toml",
            "4913",
            "lobby.toml~",
            "notes.txt",
            ".toml",
            "toml",
        ] {
            assert_eq!(created(unread), None, "{unread}");
        }
        // A rename names both ends: one that is read makes it a change.
        let renamed = notify::Event::new(EventKind::Any)
            .add_path(dir.join("lobby.toml.tmp"))
            .add_path(dir.join("lobby.toml"));
        assert_eq!(relevance(&renamed, dir), Some(false));
        // Elsewhere is not the server directory's business.
        let elsewhere = notify::Event::new(EventKind::Any).add_path(PathBuf::from("/tmp/a.toml"));
        assert_eq!(relevance(&elsewhere, dir), None);
    }

    /// A fresh, empty server directory.
    fn servers_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nethergate-reload-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(dir: &Path, file: &str, domains: &str) {
        let text = format!("domains = [{domains}]\naddresses = [\"127.0.0.1:1\"]\n");
        std::fs::write(dir.join(file), text).unwrap();
    }

    /// The live catalog of `dir` as a reload builds it.
    fn live(dir: &Path) -> Catalog {
        let mut catalog = Catalog::default();
        match prepare(&catalog, |c| {
            update_files(c, ServerFiles::read_dir(dir, None).unwrap());
        }) {
            Outcome::Reloaded(reloaded) => catalog = reloaded.0,
            Outcome::Unchanged => {}
            Outcome::Rejected(e, _) => panic!("{e}"),
        }
        catalog
    }

    fn rejected(current: &Catalog, dir: &Path) -> ConfigErrors {
        let fresh = ServerFiles::read_dir(dir, None).unwrap();
        match prepare(current, |c| {
            update_files(c, fresh);
        }) {
            Outcome::Rejected(errors, _) => errors,
            Outcome::Reloaded(..) => panic!("the conflict was accepted"),
            Outcome::Unchanged => panic!("the change was not seen"),
        }
    }

    #[test]
    fn a_conflict_is_blamed_on_the_file_that_brought_it() {
        let dir = servers_dir("conflict");
        write(&dir, "echo.toml", "\"echo.test\"");
        let catalog = live(&dir);
        // `conflict.toml` sorts before `echo.toml`, which is live and unchanged.
        write(&dir, "conflict.toml", "\"ECHO.test\", \"conf.test\"");
        let errors = rejected(&catalog, &dir);
        assert_eq!(errors.0.len(), 1, "{errors}");
        let issue = &errors.0[0];
        assert!(issue.source.ends_with("conflict.toml"), "{errors}");
        assert_eq!(issue.key, "domains");
        assert!(
            issue.reason.contains("echo.toml") && issue.reason.contains("conflict.toml"),
            "the reason names both: {errors}"
        );
        // A live file changed to claim a domain of an unchanged one: the changed one is named.
        std::fs::remove_file(dir.join("conflict.toml")).unwrap();
        write(&dir, "alpha.toml", "\"alpha.test\"");
        let catalog = live(&dir);
        write(&dir, "echo.toml", "\"echo.test\", \"alpha.test\"");
        let errors = rejected(&catalog, &dir);
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert!(errors.0[0].source.ends_with("echo.toml"), "{errors}");
        // Both changed: either is named, and the reason names both.
        write(&dir, "alpha.toml", "\"alpha.test\", \"both.test\"");
        write(&dir, "echo.toml", "\"echo.test\", \"both.test\"");
        let errors = rejected(&catalog, &dir);
        assert_eq!(errors.0.len(), 1, "{errors}");
        let reason = &errors.0[0].reason;
        assert!(
            reason.contains("alpha.toml") && reason.contains("echo.toml"),
            "{errors}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_name_taken_by_a_live_file_is_blamed_on_the_new_one() {
        let dir = servers_dir("name");
        std::fs::write(
            dir.join("lobby.toml"),
            "domains = [\"lobby.test\"]\naddresses = [\"127.0.0.1:1\"]\n",
        )
        .unwrap();
        let catalog = live(&dir);
        std::fs::write(
            dir.join("copy.toml"),
            "name = \"lobby\"\ndomains = [\"copy.test\"]\naddresses = [\"127.0.0.1:1\"]\n",
        )
        .unwrap();
        let errors = rejected(&catalog, &dir);
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert!(errors.0[0].source.ends_with("copy.toml"), "{errors}");
        assert_eq!(errors.0[0].key, "name");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
